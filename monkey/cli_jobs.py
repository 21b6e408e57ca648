"""`monkey submit` and `monkey jobs ...`: jobs from the terminal, on monkey.client.

Every command that talks to the API (`monkey batch` too) exits with the codes in
EXIT_CODES_HELP, shown in each command's --help.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from monkey.client import DEFAULT_URL, MonkeyAPIError, MonkeyClient, default_api_key

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_REFUSED, EXIT_SERVER, EXIT_TIMEOUT = range(7)
EXIT_INTERRUPTED = 130
EXIT_CODES_HELP = """Exit codes:

\b
  0  done: the job succeeded (or the request was accepted, without --follow)
  1  the job failed, was cancelled or expired; the batch failed validation, expired or
     was cancelled, or some of its lines failed
  2  usage: bad arguments or options
  3  the API is unreachable, or the API key is missing or refused (401)
  4  the API refused the request (unknown id 404, conflict 409, too large 413, invalid 400/422)
  5  the API failed (5xx)
  6  --timeout passed before the job or batch ended
130  interrupted (Ctrl-C)
"""


def client_options(f):
    f = click.option("--api-key", envvar="MONKEY_API_KEY", default=None,
                     help="API key (default MONKEY_API_KEY, else the file .monkey/api-key).")(f)
    return click.option("--api-url", envvar="MONKEY_API_URL", default=DEFAULT_URL,
                        show_default=True, help="The API's base URL (or MONKEY_API_URL).")(f)


def connect(api_url: str, api_key: str | None) -> MonkeyClient:
    key = api_key or default_api_key()
    if not key:
        fail(EXIT_AUTH, "no API key: pass --api-key, set MONKEY_API_KEY, or run `monkey up` "
                        "(it writes .monkey/api-key)")
    return MonkeyClient(api_url, key)


def fail(code: int, message: str):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def exit_code_for(err: MonkeyAPIError) -> int:
    if err.status in (0, 401, 403):
        return EXIT_AUTH
    return EXIT_SERVER if err.status >= 500 else EXIT_REFUSED


def api_errors(f):
    """Turn the client's errors into a message on stderr and the documented exit code."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except MonkeyAPIError as err:
            fail(exit_code_for(err), str(err))
        except TimeoutError as err:
            fail(EXIT_TIMEOUT, str(err))
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def parse_pairs(pairs: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=what)
        out[key] = value
    return out


def _param_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def job_exit(job: dict) -> int:
    return EXIT_OK if job["status"] == "succeeded" else EXIT_FAILED


def stream_job(mc: MonkeyClient, job_id: str, timeout: float | None) -> dict:
    """Write the job's text to stdout as it streams; its final envelope."""
    wrote = False
    for event in mc.events(job_id, timeout=timeout):
        if event.type == "token":
            sys.stdout.write(event.data.get("text", ""))
            sys.stdout.flush()
            wrote = True
        elif event.type == "status" and event.data.get("restarted"):
            click.echo(f"\n[restarted: {event.data.get('reason', '')}]", err=True)
        elif event.type == "done":
            if wrote:
                sys.stdout.write("\n")
            return event.data
    raise MonkeyAPIError(0, "stream_error", f"job {job_id}: stream ended without done")


def report_end(job: dict) -> None:
    if job["status"] != "succeeded":
        err = job.get("error") or {}
        detail = f": {err.get('type')}: {err.get('message')}" if err else ""
        click.echo(f"job {job['id']} {job['status']}{detail}", err=True)


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("prompt")
@click.option("--model", "-m", required=True, help="PROVIDER/NAME, e.g. debug/echo.")
@click.option("--kind", type=click.Choice(["generate", "embed"]), default="generate",
              show_default=True, help="embed: PROMPT is the text to embed.")
@click.option("--max-tokens", type=int, default=None)
@click.option("--temperature", type=float, default=None)
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="Another generation parameter (value parsed as JSON where it can be).")
@click.option("--priority", type=click.Choice(["interactive", "batch"]), default=None)
@click.option("--follow", "-f", is_flag=True, help="Stream the text, then exit by the result.")
@click.option("--timeout", type=float, default=None, help="With --follow: give up after this.")
@click.option("--json", "as_json", is_flag=True, help="Print the job envelope as JSON.")
@client_options
@api_errors
def submit(prompt: str, model: str, kind: str, max_tokens: int | None,
           temperature: float | None, params: tuple[str, ...], priority: str | None,
           follow: bool, timeout: float | None, as_json: bool, api_url: str,
           api_key: str | None) -> None:
    """Submit a job; prints its id (PROMPT '-' reads standard input)."""
    if prompt == "-":
        prompt = sys.stdin.read()
    extra = {k: _param_value(v) for k, v in parse_pairs(params, "--param").items()}
    extra.update({k: v for k, v in {"max_tokens": max_tokens,
                                    "temperature": temperature}.items() if v is not None})
    with connect(api_url, api_key) as mc:
        if kind == "embed":
            job = mc.submit(model, texts=[prompt], priority=priority)
        else:
            job = mc.submit(model, prompt, params=extra or None, priority=priority)
        if not follow:
            click.echo(json.dumps(job, indent=2) if as_json else job["id"])
            return
        click.echo(job["id"], err=True)
        if as_json or kind == "embed":
            final = mc.wait(job["id"], timeout=timeout)
        else:
            final = stream_job(mc, job["id"], timeout)
    if as_json:
        click.echo(json.dumps(final, indent=2))
    elif kind == "embed" and final["output"]:
        click.echo(json.dumps(final["output"]["embeddings"][0]))
    report_end(final)
    sys.exit(job_exit(final))


@click.group(epilog=EXIT_CODES_HELP)
def jobs() -> None:
    """Watch, list and cancel jobs."""


@jobs.command(epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@client_options
@api_errors
def watch(job_id: str, timeout: float | None, api_url: str, api_key: str | None) -> None:
    """Stream a job's tokens to the terminal; exit by its result."""
    with connect(api_url, api_key) as mc:
        final = stream_job(mc, job_id, timeout)
    report_end(final)
    sys.exit(job_exit(final))


@jobs.command("get", epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@client_options
@api_errors
def get_job(job_id: str, api_url: str, api_key: str | None) -> None:
    """Print a job's envelope as JSON."""
    with connect(api_url, api_key) as mc:
        click.echo(json.dumps(mc.get(job_id), indent=2))


@jobs.command("cancel", epilog=EXIT_CODES_HELP)
@click.argument("job_id")
@client_options
@api_errors
def cancel_job(job_id: str, api_url: str, api_key: str | None) -> None:
    """Cancel a job; prints its status (cancelling, then cancelled)."""
    with connect(api_url, api_key) as mc:
        click.echo(mc.cancel(job_id)["status"])


@jobs.command("list", epilog=EXIT_CODES_HELP)
@click.option("--status", default=None, help="Comma-separated statuses.")
@click.option("--kind", type=click.Choice(["generate", "embed"]), default=None)
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--after", default=None, help="Cursor: the last id of the previous page.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@client_options
@api_errors
def list_jobs(status: str | None, kind: str | None, limit: int, after: str | None,
              as_json: bool, api_url: str, api_key: str | None) -> None:
    """List your jobs, newest first."""
    with connect(api_url, api_key) as mc:
        page = mc.list(status=status, kind=kind, limit=limit, after=after)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    rows = [(j["id"], j["status"], j["model"], j["kind"], j["priority"], j["created_at"] or "")
            for j in page["data"]]
    if not sys.stdout.isatty():  # for scripts: whole values, tab-separated
        for row in rows:
            click.echo("\t".join(row))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "status", "model", "kind", "priority", "created", box=None)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    if page["has_more"]:
        click.echo(f"more: --after {page['last_id']}", err=True)


__all__ = ["EXIT_CODES_HELP", "api_errors", "client_options", "connect", "jobs", "submit"]
