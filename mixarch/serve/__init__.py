"""``mixarch serve``: an OpenAI-compatible completions server on LitServe (imports litserve; import it only to
serve)."""

from mixarch.serve.api import CompletionAPI
from mixarch.serve.server import make_server, run
from mixarch.serve.spec import COMPLETIONS_PATH, CompletionSpec

__all__ = ["COMPLETIONS_PATH", "CompletionAPI", "CompletionSpec", "make_server", "run"]
