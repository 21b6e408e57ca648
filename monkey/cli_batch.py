"""`monkey batch ...`: OpenAI-format batch files from the terminal, on monkey.client.

A batch exits 0 only when it completed and every line succeeded; 1 when it failed
validation, expired, was cancelled, or some lines failed (the results file then holds
every line, with an `error` for those that did not succeed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from monkey.cli_jobs import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    api_errors,
    client_options,
    connect,
    fail,
    parse_pairs,
)
from monkey.client import BATCH_TERMINAL, MonkeyClient

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")


def counts(batch: dict) -> tuple[int, int, int, int]:
    """(total, done, failed, remaining)."""
    c = batch.get("request_counts") or {}
    total, done, failed = c.get("total", 0), c.get("completed", 0), c.get("failed", 0)
    return total, done, failed, max(total - done - failed, 0)


def batch_exit(batch: dict) -> int:
    total, done, _, _ = counts(batch)
    return EXIT_OK if batch["status"] == "completed" and done == total else EXIT_FAILED


def summary(batch: dict) -> str:
    total, done, failed, remaining = counts(batch)
    return (f"{batch['id']}: {batch['status']}, {done} done, {failed} failed, "
            f"{remaining} remaining of {total}")


def follow(mc: MonkeyClient, batch_id: str, *, timeout: float | None, poll: float) -> dict:
    """Wait for the batch with a progress bar on stderr: done, failed, remaining."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("done {task.fields[done]}  failed {task.fields[failed]}  "
                          "remaining {task.fields[remaining]}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("validating", total=None, done=0, failed=0, remaining="?")

        def update(batch: dict) -> None:
            total, done, failed, remaining = counts(batch)
            progress.update(task, description=batch["status"], total=total or None,
                            completed=done + failed, done=done, failed=failed,
                            remaining=remaining if total else "?")

        return mc.wait_batch(batch_id, poll_s=poll, timeout=timeout, on_update=update)


def report(batch: dict) -> None:
    click.echo(summary(batch), err=True)
    for e in (batch.get("errors") or {}).get("data") or []:
        click.echo(f"  {e.get('code')}: {e.get('message')}", err=True)


def write_results(mc: MonkeyClient, batch: dict, output: str) -> int:
    lines = mc.batch_results(batch["id"])
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text)
        click.echo(f"wrote {len(lines)} results to {output}", err=True)
    return len(lines)


@click.group(epilog=EXIT_CODES_HELP)
def batch() -> None:
    """Run OpenAI-format JSONL batch files (one request per line)."""


@batch.command("submit", epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", type=click.Choice(ENDPOINTS), default=None,
              help="Default: the url of the file's first line.")
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE")
@click.option("--wait", "-w", is_flag=True, help="Show progress until the batch ends.")
@click.option("--output", "-o", default=None, metavar="FILE",
              help="Write every line's result here ('-': stdout); implies --wait.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after this.")
@click.option("--poll", type=float, default=1.0, show_default=True,
              help="Seconds between progress reads.")
@client_options
@api_errors
def submit(file: Path, endpoint: str | None, metadata: tuple[str, ...], wait: bool,
           output: str | None, timeout: float | None, poll: float, api_url: str,
           api_key: str | None) -> None:
    """Upload FILE and start a batch on it; prints the batch id."""
    meta = parse_pairs(metadata, "--metadata")
    with connect(api_url, api_key) as mc:
        try:
            started = mc.submit_batch(file, endpoint=endpoint, metadata=meta or None)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        # With results on stdout, the id goes to stderr so that stdout is the results alone.
        click.echo(started["id"], err=output == "-")
        if not (wait or output):
            return
        final = follow(mc, started["id"], timeout=timeout, poll=poll)
        report(final)
        if output and final["status"] != "failed":
            write_results(mc, final, output)
    sys.exit(batch_exit(final))


@batch.command("status", epilog=EXIT_CODES_HELP)
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the batch object as JSON.")
@client_options
@api_errors
def status(batch_id: str, as_json: bool, api_url: str, api_key: str | None) -> None:
    """Show a batch's status and counts (exit 0 whatever its status)."""
    with connect(api_url, api_key) as mc:
        b = mc.get_batch(batch_id)
    if as_json:
        click.echo(json.dumps(b, indent=2))
    else:
        click.echo(summary(b))
        for e in (b.get("errors") or {}).get("data") or []:
            click.echo(f"  {e.get('code')}: {e.get('message')}")


@batch.command("results", epilog=EXIT_CODES_HELP)
@click.argument("batch_id")
@click.option("--output", "-o", required=True, metavar="FILE", help="'-' for stdout.")
@click.option("--wait", "-w", is_flag=True, help="Wait for the batch to end first.")
@click.option("--timeout", type=float, default=None)
@client_options
@api_errors
def results(batch_id: str, output: str, wait: bool, timeout: float | None, api_url: str,
            api_key: str | None) -> None:
    """Write every answered line of a finished batch to FILE, in input order."""
    with connect(api_url, api_key) as mc:
        b = mc.get_batch(batch_id)
        if b["status"] not in BATCH_TERMINAL:
            if not wait:
                fail(EXIT_REFUSED, f"batch {batch_id} is {b['status']}; pass --wait")
            b = follow(mc, batch_id, timeout=timeout, poll=1.0)
        write_results(mc, b, output)
    report(b)
    sys.exit(batch_exit(b))


@batch.command("cancel", epilog=EXIT_CODES_HELP)
@click.argument("batch_id")
@client_options
@api_errors
def cancel(batch_id: str, api_url: str, api_key: str | None) -> None:
    """Cancel a batch: queued lines are dropped, finished ones kept."""
    with connect(api_url, api_key) as mc:
        click.echo(mc.cancel_batch(batch_id)["status"])


@batch.command("list", epilog=EXIT_CODES_HELP)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", default=None)
@client_options
@api_errors
def list_batches(limit: int, after: str | None, api_url: str, api_key: str | None) -> None:
    """List your batches, newest first."""
    with connect(api_url, api_key) as mc:
        page = mc.list_batches(limit=limit, after=after)
    for b in page["data"]:
        click.echo(summary(b))
    if page["has_more"]:
        click.echo(f"more: --after {page['last_id']}", err=True)


__all__ = ["batch"]
