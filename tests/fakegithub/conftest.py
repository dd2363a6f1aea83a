from .pytest_plugin import fake_github, github_setup

__all__ = ["fake_github", "github_setup"]
