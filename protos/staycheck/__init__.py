"""StayCheck: privacy-preserving itinerary verification.

The installed packages, from the pure rules up (each imports only those below it):

- ``staycheck.v1``: generated protobuf code for ``protos/staycheck/v1/*.proto``.
- ``staycheck.geo``: geometry and the itinerary rule (the matching rule of docs/rules.md).
- ``staycheck.trust``: signed data: COSE, keys and key sets, signers, the verdict format and
  its offline verifier, base45, the bundle trust rules.
- ``staycheck.client``: the gRPC client and the caller's file handling.
- ``staycheck.server``: the gRPC server.
- ``staycheck.cli``: the ``staycheck`` command, the demo, throwaway PKI, sample data.

``pip install staycheck`` is enough for ``staycheck.trust`` and ``staycheck verify``;
``staycheck[client]`` adds the gRPC client, ``staycheck[server]`` the server and the
authority's tools. This file lives in ``protos/staycheck/`` because that folder is already
the ``staycheck`` package of the protobuf schema.
"""

__version__ = "0.1.0"
