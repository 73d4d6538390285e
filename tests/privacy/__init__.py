"""Privacy promises of SPEC.md: nothing kept, nothing leaked (issue 4)."""
