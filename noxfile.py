"""nox sessions: `nox -s tests` (the CPU suite) and `nox -s lint` (ruff)."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session):
    session.install("torch==2.13.0", "-e", ".[test]", "-e", "plugins/mixarch-gla")
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "mixarch", "tests", "plugins", "noxfile.py")
