"""Who may start work, and how often: write access or the config's allowlist for commands, the
authors whose previews start by themselves, and the preview rate limits.
"""

from __future__ import annotations

from bot.handlers.common import Context, load_config
from bot.state.limits import minutes
from pipeline.config import RepoConfig
from pipeline.errors import ConfigError

WRITE_ROLES = {"admin", "maintain", "write"}


def auto_preview(
    ctx: Context, inst: int | None, repo: str, number: int, config: RepoConfig
) -> bool:
    """Previews start by themselves for authors with write access, or for everyone when the
    repository's config says ``preview: {everyone: true}``."""
    if ctx.teacher is None or not config.preview.enabled:
        return False
    if config.preview.everyone:
        return True
    author = str(ctx.client.pull(inst, repo, number).get("user", {}).get("login", ""))
    return ctx.client.permission(inst, repo, author) in WRITE_ROLES


def may_command(ctx: Context, inst: int | None, repo: str, user: str) -> bool:
    """Whether ``user`` may run commands: write access, or the config's allowlist. The answer
    is cached (``ctx.limits``) so that repeated commands cost no API call."""
    cached = ctx.limits.permission(repo, user) if ctx.limits is not None else None
    if cached is not None:
        return cached
    # Two commands of one user can reach two workers (or replicas) at once: the second waits
    # for the first's answer instead of asking GitHub again.
    with ctx.locks.hold(f"permission:{repo.lower()}:{user.lower()}"):
        cached = ctx.limits.permission(repo, user) if ctx.limits is not None else None
        if cached is not None:
            return cached
        return _look_up_permission(ctx, inst, repo, user)


def _look_up_permission(ctx: Context, inst: int | None, repo: str, user: str) -> bool:
    allowed = ctx.client.permission(inst, repo, user) in WRITE_ROLES
    if not allowed:
        try:
            allowed = load_config(ctx, inst, repo).commands.allows(user)
        except ConfigError:
            allowed = False
    if ctx.limits is not None:
        ctx.limits.remember_permission(repo, user, allowed)
    return allowed


def preview_wait(ctx: Context, inst: int | None, repo: str, number: int) -> str | None:
    """Count one preview of this pull request against the rate limits; ``None`` when it may
    run, else why not and for how long (for the reply)."""
    if ctx.limits is None:
        return None
    limits = ctx.preview_limits
    wait = ctx.limits.take_preview(inst, repo, number, limits)
    if wait is None:
        return None
    hours = limits.window_seconds / 3600
    return (
        f"previews are limited to {limits.per_pr} per pull request and "
        f"{limits.per_installation} for this installation every {hours:g} hour(s); "
        f"try again in {minutes(wait)} minutes"
    )
