"""A Python port of go-oversync's ``mobile_flow`` simulator.

Realistic SQLite "devices" - each one a database file, an oversync client, a sign-in session and
the app's own sync loops - run scripted scenarios (first install, reinstall, a second phone,
conflicts, crashes mid-push, pruned history, watch wake-ups...) against a running sync server,
and every outcome is checked on the devices *and* directly in the server's PostgreSQL.

    python -m examples.mobile_flow --scenario=all --server http://127.0.0.1:8080 \\
        --db postgresql://postgres@127.0.0.1:5432/clisync_example

Works against this project's reference server (``python -m examples.litestar_server``) and
against go-oversync's ``examples/nethttp_server``. ``python -m examples.demo`` starts a server
on embedded PostgreSQL and runs a subset for you.
"""
