"""`mathrl generator`: vLLM's own server for a run config, in the foreground.

This is the process `mathrl up` launches itself, started on its own: in the CPU compose stack
(docker/compose.cpu.yml) the generator is a container of its own, and its flags and
environment must be the ones the launcher would use (`server_args` / `server_env`), not a
copy of them kept by hand in the compose file. The process is *replaced* by vLLM (exec), so
the container's signals and exit status are vLLM's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.errors import InvalidFile


def generator_command(config: Path, *, host: str, port: int, device: str | None = None,
                      api_key: str | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and the extra environment of the vLLM server `mathrl up` would launch for `config`,
    listening on host:port."""
    from services.config import load_config
    from services.generator.launcher import VLLMServer, detect_device, server_args, server_env
    from services.paths import model_problem

    cfg = load_config(config)
    cfg = cfg.model_copy(update={"generator": cfg.generator.model_copy(
        update={"host": host, "port": port})})
    model = cfg.model.name_or_path
    if (problem := model_problem(model)) is not None:
        raise InvalidFile(f"{config}: model.name_or_path: {problem}")
    # The same served name as the orchestrator's (`Stack.model_path`): a local folder by its
    # absolute path, a Hub id as is (vLLM fetches it).
    model_path = str(Path(model).resolve()) if os.path.isdir(model) else model
    device = device or detect_device()
    args = server_args(cfg, model_path=model_path, device=device)
    env = server_env(cfg.generator, device=device, api_key=api_key)
    server = VLLMServer(model_path, args, env, log_path=Path(os.devnull), host=host, port=port)
    return server.argv, env


def generator(
    config: Annotated[Path, typer.Option(envvar="MATHRL_CONFIG",
                                         help="Run config whose model/generator it serves")],
    host: Annotated[str, typer.Option(envvar="MATHRL_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="MATHRL_GENERATOR_PORT")] = 8100,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command, start nothing")
                       ] = False,
    device: Annotated[str | None, typer.Option(
        help="cuda or cpu: the device to size the server for (default: the one torch sees). "
             "With --dry-run, shows what a GPU machine would run from a machine without one.")
    ] = None,
) -> None:
    """Run vLLM's server for CONFIG in the foreground (what `mathrl up` launches itself).

    MATHRL_API_TOKEN: the key its /v1 routes then require (as with `mathrl up`)."""
    import shlex

    if not config.is_file():
        raise InvalidFile(f"{config}: no such config file")
    if device not in (None, "cuda", "cpu"):
        raise typer.BadParameter(f"{device!r}: expected cuda or cpu", param_hint="--device")
    token = os.environ.get("MATHRL_API_TOKEN") or None
    argv, env = generator_command(config, host=host, port=port, device=device, api_key=token)
    if dry_run:
        shown = {k: ("***" if k == "VLLM_API_KEY" else v) for k, v in env.items()}
        typer.echo(" ".join(f"{k}={shlex.quote(v)}" for k, v in shown.items()))
        typer.echo(shlex.join(argv))
        return
    os.execvpe(argv[0], argv, {**os.environ, **env})


def register(app: typer.Typer) -> None:
    app.command()(generator)
