"""Cluster mode: instances sharing one PostgreSQL store are one bridge.

One concern per module: :mod:`~bridge.cluster.timing` (names and the failover clock),
:mod:`~bridge.cluster.slots` (the pure fair-share planner of bind slots),
:mod:`~bridge.cluster.membership` (heartbeats, the live view, the leader) and
:mod:`~bridge.cluster.binds` (opening and closing a carrier's binds as slots are won
and lost). On SQLite the process is a cluster of one and holds every slot.
"""
