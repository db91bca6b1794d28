"""Distributed replay: the run cut into disjoint shares, each replayed by one Locust worker.

    shares.py      which (session, copy) units a share has; ShareReplay; per-request JSON events
    locustfile.py  the Locust user (runs its worker's share, reports requests to Locust's stats)
    launch.py      master and worker command lines; a local master + N workers run
"""
