"""Django's PostgreSQL backend with a health check that needs no round trip.

With ``CONN_HEALTH_CHECKS`` Django checks a persistent connection before the first query of each
request by running ``SELECT 1``: one more round trip on every request, a sixth of a labeler's lease.
A server that ends a connection (restart, ``pg_terminate_backend``, idle timeout) first sends an
error and closes the socket, so an idle connection whose socket has anything to read, or that
psycopg already saw break, is not usable; that check is local.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed or connection.broken:
            return False
        if connection.info.transaction_status != TransactionStatus.IDLE:  # only a query can tell
            return super().is_usable()
        poller = select.poll()  # not select(): it fails on descriptors above 1023
        try:
            poller.register(connection.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False
