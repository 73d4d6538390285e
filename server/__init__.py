"""The StayCheck gRPC server: the public service, the partner listener, the risk areas
followed from the TUF repository, the verdict key store, configuration, metrics and logs,
worker processes.

- :class:`StayCheckServer`: one server in this process (``start``, ``stop``), built from a
  :class:`ServerConfig`.
- :func:`run`: what ``staycheck serve`` does (signals, workers, graceful stop).

Needs the ``server`` extra.
"""

from staycheck.server.app import StayCheckServer
from staycheck.server.config import ServerConfig
from staycheck.server.process import run

__all__ = ["ServerConfig", "StayCheckServer", "run"]
