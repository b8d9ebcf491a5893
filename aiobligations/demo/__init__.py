"""The demo AI service: toy models behind OpenAI-compatible routes, wrapped by the middleware."""

from .app import build_app
from .models import ToyChatModel, ToyImageModel
from .server import run_demo, wrap

__all__ = ["ToyChatModel", "ToyImageModel", "build_app", "run_demo", "wrap"]
