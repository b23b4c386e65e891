"""`python -m bench`: runs every figure beside its baseline, prints the table, writes bench/results/latest.json."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench import cli, cli_scale, cluster, dockerfile, drains, running, services, staging, usage
from bench.baseline import Docker
from bench.node import REPO, BenchNode
from bench.report import Row, absolute_row, ratio_row, table, write_json
from bench.stats import Summary


SECTIONS = ("cli", "staging", "start", "scale", "cli-scale", "api", "stats", "drains", "services", "dockerfile",
            "cluster")


def main() -> int:
    """Entry point of ``make bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each staging and start figure")
    parser.add_argument("--scale", type=int, default=50, help="instances started together")
    parser.add_argument("--scale-reps", type=int, default=2, help="repetitions of the scale figure")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="docker runs at once (fence's reconciler starts 8 at a time)")
    parser.add_argument("--apps", type=int, default=200, help="apps in the store for the API latency")
    parser.add_argument("--calls", type=int, default=200, help="timed API calls")
    parser.add_argument("--cli-reps", type=int, default=15, help="runs of `fence apps --json` (at least 10)")
    parser.add_argument("--stats-instances", type=int, default=50, help="instances for the stats section")
    parser.add_argument("--idle-seconds", type=float, default=30.0,
                        help="seconds the daemon's CPU is measured with those instances idle")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    parser.add_argument("--keep-home", action="store_true", help="keep the node's FENCE_HOME (daemon log)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)")
    args = parser.parse_args()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not only or only - set(SECTIONS):
        parser.error(f"--only takes sections of {', '.join(SECTIONS)}, not {args.only!r}")
    if args.cli_reps < 10:
        parser.error("--cli-reps must be at least 10")

    say = lambda text: print(text, flush=True)  # noqa: E731
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    docker = Docker(run_id=run_id)
    node = BenchNode(keep=args.keep_home)
    host_work = Path(tempfile.mkdtemp(prefix="fence-bench-work-"))
    figures: dict[str, Summary] = {}
    extra: dict[str, object] = {}
    try:
        say(f"-----> fence node at {node.root} (router port {node.router_port}), run {run_id}")
        node.start()
        droplet = ""
        if "cli" in only:  # first: a node with only its few apps, before other sections fill the store
            say(f"-----> CLI process ({args.cli_reps} runs each)")
            figures.update(cli.measure_cli(node, reps=args.cli_reps, say=say))
        if "staging" in only:
            say(f"-----> Staging ({args.reps} repetitions each)")
            staged = staging.measure(node, docker, reps=args.reps, host_work=host_work, say=say)
            figures.update(staged.figures)
            droplet = staged.droplets["python"].id
            for sample, record in staged.droplets.items():
                extra[f"droplet.{sample}"] = {
                    "source_bytes": staged.source_bytes[sample], "droplet_bytes": record.size,
                    "entries": staging.droplet_entries(node.root / "droplets" / f"{record.id}.tgz")}
        if only & {"start", "scale"}:
            say(f"-----> Instance start ({args.reps} repetitions)")
            started_run = running.measure_start(node, docker, reps=args.reps, host_work=host_work, say=say)
            figures.update(started_run.figures)
            droplet = droplet or started_run.droplet
            if "scale" in only:
                say(f"-----> {args.scale} instances at once ({args.scale_reps} repetitions)")
                figures.update(running.measure_scale(node, docker, image=started_run.baseline_image,
                                                     count=args.scale, reps=args.scale_reps,
                                                     concurrency=args.concurrency, say=say))
        if "cli-scale" in only:
            say(f"-----> `fence scale` as a CLI process ({args.reps} repetitions)")
            figures.update(cli_scale.measure(node, docker, reps=args.reps, host_work=host_work, say=say))
        if "api" in only:
            say(f"-----> Apps API with {args.apps} apps ({args.calls} calls)")
            figures.update(running.measure_api(node, apps=args.apps, calls=args.calls,
                                               droplet=droplet or running.push_sample(node), say=say))
        if "stats" in only:  # issue 18: usage figures
            say(f"-----> `fence stats` and daemon CPU with {args.stats_instances} instances")
            figures.update(usage.measure(node, count=args.stats_instances, reps=max(30, args.reps),
                                         idle_seconds=args.idle_seconds, say=say))
        if "drains" in only:  # issue 18: log drains
            say(f"-----> Log drain: {drains.RATE} lines/s from one instance for {drains.SECONDS} s, TCP syslog")
            figures.update(drains.measure(node, host_work=host_work, say=say))
        if "services" in only:  # issue 16
            say(f"-----> Services ({args.reps} repetitions)")
            figures.update(services.measure(node, reps=args.reps, run_id=run_id, host_work=host_work, say=say))
        if "dockerfile" in only:
            say(f"-----> Dockerfile builds ({args.reps} repetitions)")
            figures.update(dockerfile.measure(reps=args.reps, host_work=host_work, say=say))
            figures.update(dockerfile.measure_start(node, docker, reps=args.reps, say=say))
        if "cluster" in only:  # issue 17: three extra engines of this machine
            say(f"-----> Cluster of 3 local engines ({min(args.reps, 3)} repetitions)")
            figures.update(cluster.measure(reps=min(args.reps, 3), run_id=run_id, host_work=host_work, say=say))
    finally:
        node.close()
        docker.close()
        shutil.rmtree(host_work, ignore_errors=True)
    rows = _rows(figures, extra, args.scale, args.apps)
    elapsed = time.monotonic() - started
    meta = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "run": run_id,
            "sections": sorted(only),
            "seconds": round(elapsed, 1), "reps": args.reps, "scale": args.scale,
            "scale_reps": args.scale_reps, "concurrency": args.concurrency, "apps": args.apps,
            "calls": args.calls, "cli_reps": args.cli_reps, "commit": _commit(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "docker": _docker_version()}
    write_json(args.out, meta=meta, rows=rows, figures=figures, extra=extra)
    say("")
    say(table(rows))
    say("")
    say(f"-----> {sum(1 for r in rows if r.met)} of {sum(1 for r in rows if r.met is not None)} targets met; "
        f"{elapsed / 60:.1f} min; written to {args.out}")
    return 0


def _rows(f: dict[str, Summary], extra: dict[str, object], scale: int, apps: int) -> list[Row]:
    """The table's rows for the figures measured (a section not run has none)."""
    rows = []
    if "cli.fence" in f:
        fence, python = f["cli.fence"], f["cli.python"]
        rows += [
            absolute_row(f"`fence apps --json`, whole process ({cli.APPS} apps)", fence.text(), fence.median, 150, "ms",
                         baseline=python.text(), baseline_name="python -c pass, same interpreter"),
            ratio_row("`fence apps --json` / interpreter start (value: ratio)", fence, python,
                      f"python -c pass; difference {fence.median - python.median:.0f} ms", None),
        ]
    if "start.docker" in f:
        rows += [
            ratio_row("instance start, first of a droplet (API call → first 200 from it)", f["start.first.fence"],
                      f["start.docker"], "docker run of an image holding the droplet, observed alike", 1.15),
            ratio_row("instance start, further instance", f["start.further.fence"], f["start.docker"],
                      "docker run", 1.15),
            ratio_row("instance start, first, beside docker run with its port polled from the start",
                      f["start.first.fence"], f["start.docker_port"], "docker run, published port polled", None),
            ratio_row("instance start, first: first 200 through the router", f["start.first.fence_routed"],
                      f["start.docker"], "docker run", None),
            ratio_row("instance start, first: API call returned (healthy, routed)", f["start.first.fence_api"],
                      f["start.docker"], "docker run", None),
            absolute_row("droplet image made at push (once per droplet and stack)", f["droplet.image"].text(),
                         f["droplet.image"].median, None, "s"),
        ]
    for sample in staging.SAMPLES if "stage.noop.fence" in f else ():
        cold, warm = f[f"stage.{sample}.cold.fence"], f[f"stage.{sample}.warm.fence"]
        rows += [
            ratio_row(f"stage {sample}, cold", cold, f[f"stage.{sample}.cold.docker"], "docker build --no-cache", 1.2),
            ratio_row(f"stage {sample}, warm (restage)", warm, f[f"stage.{sample}.warm.docker"],
                      "docker build (builder cache)", None),
            absolute_row(f"stage {sample}, warm / cold", f"{warm.median:.2f} s / {cold.median:.2f} s",
                         warm.median / cold.median, 0.35, "× cold"),
        ]
        forced = f.get(f"stage.{sample}.forced.fence")
        if forced is not None:
            rows.append(absolute_row(f"stage {sample}, warm --force (every step again) / cold",
                                     f"{forced.median:.2f} s / {cold.median:.2f} s", forced.median / cold.median,
                                     None, "× cold"))
    if "stage.noop.fence" in f:
        noop = f["stage.noop.fence"]
        rows.append(absolute_row("fixed staging overhead (compile does nothing)", noop.text(), noop.median, 1.5,
                                 "s", baseline=f["stage.noop.docker"].text(), baseline_name="docker build --no-cache"))
    if "scale.fence" in f:
        rows.append(ratio_row(f"{scale} instances at once → all healthy", f["scale.fence"], f["scale.docker"],
                              f"{scale} docker runs, same concurrency", 1.3))
        rss = f["rss.running"]
        rows.append(absolute_row(f"daemon RSS with {scale} running", rss.text(), rss.high, 120, "MB",
                                 baseline=f["rss.idle"].text(), baseline_name="idle daemon"))
    if "cli_scale.fence" in f:
        rows.append(ratio_row("`fence scale APP N+1` (CLI process, until healthy and routed)", f["cli_scale.fence"],
                              f["cli_scale.docker"], "docker run -d, to its first 200", 1.5))
        rows.append(absolute_row("`fence --version` (CLI process floor)", f["cli_scale.floor"].text(),
                                 f["cli_scale.floor"].median, None, "s"))
    if "api.fence" in f:
        api = f["api.fence"]
        rows.append(absolute_row(f"apps API, {apps} apps: p50 / p99",
                                 f"{api.percentile(50):.1f} / {api.percentile(99):.1f} ms",
                                 api.percentile(99), 100, "ms (p99)",
                                 baseline=f"{f['api.docker'].percentile(50):.1f} / "
                                          f"{f['api.docker'].percentile(99):.1f} ms",
                                 baseline_name="engine GET /containers/json"))
        rows.append(absolute_row(f"`fence apps --json` (CLI process), {apps} apps", f["api.cli"].text(),
                                 f["api.cli"].median, None, "ms"))
    if "usage.stats_cli" in f:
        stats_cli, cpu = f["usage.stats_cli"], f["usage.daemon_cpu"]
        rows.append(absolute_row("`fence stats` (CLI process), 50 instances: p50 / p99",
                                 f"{stats_cli.percentile(50):.0f} / {stats_cli.percentile(99):.0f} ms",
                                 stats_cli.percentile(99), 200, "ms (p99)",
                                 baseline=f"{f['usage.cli_floor'].percentile(50):.0f} / "
                                          f"{f['usage.cli_floor'].percentile(99):.0f} ms",
                                 baseline_name="`fence --version`, same interpreter"))
        rows.append(absolute_row("daemon CPU, 50 instances idle, /metrics scraped every 5 s", f"{cpu.median:.2f} %",
                                 cpu.median, 2, "% of one core",
                                 baseline=f"{f['usage.daemon_cpu_quiet'].median:.2f} %",
                                 baseline_name="same daemon, not scraped"))
    if "drains.written" in f:  # issue 18: log drains
        written, received = f["drains.written"].median, f["drains.received"].median
        rows.append(absolute_row(f"drain: lines received / written, {f['drains.rate'].median:.0f} lines/s "
                                 "(value: share lost)", f"{received:.0f} / {written:.0f}",
                                 1 - received / max(written, 1), 0.01, "lost (≥ 0.99 received)"))
        rows.append(absolute_row("drain receiver down 10 s: daemon RSS (max)", f["drains.rss_down"].text(),
                                 f["drains.rss_down"].high, 150, "MB",
                                 baseline=f"{f['drains.dropped'].median:.0f} lines dropped, reported "
                                          f"{'down' if f['drains.down'].median else 'NOT down'}",
                                 baseline_name="kato status"))
    if "services.create.fence" in f:  # issue 16
        rows.append(ratio_row("`fence service create postgresql` → accepting connections", f["services.create.fence"],
                              f["services.create.docker"], "docker run, same image and options → pg_isready", 1.2))
        rows.append(ratio_row("backup of a 100 MB PostgreSQL database", f["services.backup.fence"],
                              f["services.backup.docker"], "pg_dump -Fc by hand (docker exec > file)", 1.1))
    if "dockerfile.cold.fence" in f:
        cold, warm = f["dockerfile.cold.fence"], f["dockerfile.warm.fence"]
        rows.append(ratio_row("Dockerfile app, cold build (checks + context + build)", cold,
                              f["dockerfile.cold.docker"], "docker build --no-cache (classic builder)", 1.1))
        rows.append(absolute_row("Dockerfile app, warm rebuild (own cache) / cold", f"{warm.median:.2f} s / "
                                 f"{cold.median:.2f} s", warm.median / cold.median, 0.1, "× cold"))
    if "dockerfile.start.fence" in f:
        rows.append(ratio_row("image app, first instance start → first 200", f["dockerfile.start.fence"],
                              f["dockerfile.start.docker"], "docker run of the same image → first 200", 1.1))
        if "dockerfile.start.docker_own_net" in f:
            rows.append(ratio_row("image app, first instance start, beside docker run on its own network",
                                  f["dockerfile.start.fence"], f["dockerfile.start.docker_own_net"],
                                  "docker run of the same image on a bridge network of its own (as each fence "
                                  "app has) → first 200", None))
    if "cluster.scale30.fence" in f:  # issue 17
        rows.append(ratio_row(f"{cluster.SCALED} instances of one app over 3 nodes → all healthy",
                              f["cluster.scale30.fence"], f["cluster.scale30.docker"],
                              f"docker service create --replicas {cluster.SCALED}, same image and task template "
                              "→ all running", 1.2))
    if "cluster.redeploy.fence" in f:
        failed = f["cluster.redeploy.failed"]
        rows.append(absolute_row(f"redeploy of {cluster.REDEPLOYED} instances across 3 nodes: failed requests "
                                 "(poller through the router)", f"{failed.high:.0f} (of every redeploy)",
                                 failed.high, 0, "requests"))
        rows.append(ratio_row(f"redeploy of {cluster.REDEPLOYED} instances: 3 nodes / single node",
                              f["cluster.redeploy.fence"], f["cluster.redeploy.single"],
                              "the same redeploy of the same app on one node", None))
    if "cluster.kill.full" in f:
        rows.append(absolute_row(f"worker engine killed → {cluster.REDEPLOYED} instances healthy again",
                                 f["cluster.kill.full"].text(), f["cluster.kill.full"].median, None, "s",
                                 baseline=f"{f['cluster.kill.failed'].high:.0f} failed requests",
                                 baseline_name="poller through the router, Swarm heartbeat 1 s"))
    for sample in staging.SAMPLES:
        info = extra.get(f"droplet.{sample}")
        if isinstance(info, dict):
            rows.append(absolute_row(f"droplet size, {sample} (value: × source)",
                                     f"{_bytes(info['droplet_bytes'])} ({info['entries']} entries)",
                                     info["droplet_bytes"] / max(1, info["source_bytes"]),
                                     None, "", baseline=_bytes(info["source_bytes"]),
                                     baseline_name="source files"))
    if "droplet.copied.fence" in f:
        copied, plain = f["droplet.copied.fence"], f["droplet.copied.docker"]
        rows.append(absolute_row("bytes written into an instance's layer at start (value: MB)",
                                 _bytes(copied.median), copied.median / 1e6, None, "MB",
                                 baseline=_bytes(plain.median), baseline_name="docker run (app in the image)"))
    return rows


def _bytes(count: float) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f} B"


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "fence"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + ("+dirty" if dirty else "")


def _docker_version() -> str:
    done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
