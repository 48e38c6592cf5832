#!/usr/bin/python3
"""The migration benchmark: stock pre-copy vs p2bmig (paper and lazy mode),
side by side, between hosts on shaped links.

Source, target and NAS are network namespaces (bench/netns.sh) joined by veth
links shaped with tc; the NAS runs nfs-ganesha (scripts/nfs-server.sh with
NFS_NETNS). For each guest size, link, repetition and workload, every mode
migrates the same seeded guest from a `p2bmig send` process in the source
namespace to a `p2bmig receive` process in the target namespace over TCP,
the target reading mapped blocks from the NAS through libnfs. The source
writes its disk image straight into the directory the NAS exports (the file
the NAS serves is the file the source writes). The modes of one workload run
back to back, in an order that alternates between repetitions, so that the
machine's noise hits them alike.

Writes, into --out: results.json (a `runs` array, one entry per migration),
results.md (medians, ratios to the baseline, distance from the lower bound)
and one PNG per guest size and link.

    bench/run.py --quick      # CI profile: small guests, 2 workloads, 1 run
    bench/run.py              # the full suite (1/2/4 GiB, all workloads,
                              # 1 and 10 Gbit/s, 3 repetitions)

Needs root (namespaces). Installs what it needs (scripts/setup.sh) and builds
p2bmig unless --p2bmig names a binary.
"""

import argparse
import datetime
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETNS = os.path.join(ROOT, "bench", "netns.sh")
NFS_SERVER = os.path.join(ROOT, "scripts", "nfs-server.sh")
SRC_NS, TGT_NS, NAS_NS = "p2b-src", "p2b-tgt", "p2b-nas"
TGT_ADDR = "198.18.1.2"
NAS_OWN_ADDR = "198.18.2.1"  # the NAS's own link to the target
NAS_LAN_ADDR = "198.18.1.3"  # the NAS on the LAN: shares the target's port
NFS_QUERY = "?version=3&nfsport=2049&mountport=20048"
PAGE = 4096

ALL_WORKLOADS = ["idle", "fileserver", "kernel-build", "database", "memory", "cache-rewrite"]
CACHE_HEAVY = ["fileserver", "kernel-build", "database", "cache-rewrite"]
QUICK = dict(sizes="256M", workloads="fileserver,memory", links="1gbit", reps=1)
FULL = dict(sizes="1G,2G,4G", workloads=",".join(ALL_WORKLOADS), links="1gbit,10gbit", reps=3)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B)?", text.strip(), re.I)
    if not m:
        raise SystemExit(f"bad size '{text}'")
    return int(m[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m[2].upper()]


def parse_rate(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", text)
    if not m:
        raise SystemExit(f"bad rate '{text}' (e.g. 1gbit, 500mbit)")
    return float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]


class Link:
    """A link configuration: 'RATE' (the NAS on its own link of the same
    rate), 'RATE/NASRATE' (its own link at another rate) or 'RATE-shared'
    (the NAS traffic shares the target's LAN port with the migration)."""

    def __init__(self, spec):
        m = re.fullmatch(r"([0-9.]+[kmg]?bit)(?:/([0-9.]+[kmg]?bit))?(-shared)?", spec)
        if not m or (m[2] and m[3]):
            raise SystemExit(f"bad link '{spec}' (RATE, RATE/NASRATE or RATE-shared)")
        self.name = spec
        self.rate = m[1]
        self.nas_rate = m[2] or m[1]
        self.shared = bool(m[3])
        self.bytes_per_s = parse_rate(self.rate) / 8
        self.nas_bytes_per_s = parse_rate(self.nas_rate) / 8

    def nas_url(self, image_name):
        addr = NAS_LAN_ADDR if self.shared else NAS_OWN_ADDR
        return f"nfs://{addr}/export/{image_name}{NFS_QUERY}"

    def lower_bound(self, memory, cache, zero):
        """Seconds the migration needs at least: what only the source has
        (memory that is neither page cache nor zero) crosses the link, the
        page cache comes from the NAS, in parallel; on a shared port both
        cross the same link."""
        rest = max(memory - cache - zero, 0)
        if self.shared:
            return (rest + cache) / self.bytes_per_s
        return max(rest / self.bytes_per_s, cache / self.nas_bytes_per_s)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def disk_size_for(memory):
    # Room for the page cache to hold distinct blocks (up to 70% of memory).
    return min(2 * memory, memory + (2 << 30))


def restore_image(pristine, image, chunk=4 << 20):
    """Makes `image` equal to `pristine` again, in place (the NAS keeps
    serving the same file), writing only the chunks the last run changed."""
    if not os.path.exists(image) or os.path.getsize(image) != os.path.getsize(pristine):
        shutil.copyfile(pristine, image)
        return os.path.getsize(pristine)
    changed = 0
    a, b = bytearray(chunk), bytearray(chunk)
    with open(pristine, "rb", buffering=0) as src, open(image, "r+b", buffering=0) as dst:
        off = 0
        while True:
            n = src.readinto(a)
            if not n:
                break
            m = dst.readinto(b)
            same = (a == b) if n == chunk == m else (m == n and a[:n] == b[:n])
            if not same:
                os.pwrite(dst.fileno(), memoryview(a)[:n], off)
                changed += n
            off += n
        os.fsync(dst.fileno())
    return changed


def load_guest_writes(path):
    """A lazy-restore target's log of its resumed guest's writes (p2bmig
    receive writes it next to the memory file): {pfn: [(offset, value)]}, in
    order. Entries: 24 bytes, little-endian {pfn u64, offset u32, reserved
    u32, value u64}."""
    writes = {}
    with open(path, "rb") as f:
        data = f.read()
    for off in range(0, len(data) - len(data) % 24, 24):
        pfn, offset, _, value = struct.unpack_from("<QIIQ", data, off)
        writes.setdefault(pfn, []).append((offset, value))
    return writes


def apply_guest_writes(buf, n, first_pfn, writes):
    """XORs each logged write into the pages of `buf` (as the guest's
    read-modify-writes did on the target)."""
    for pfn in range(first_pfn, first_pfn + n // PAGE):
        for offset, value in writes.get(pfn, ()):
            at = (pfn - first_pfn) * PAGE + offset
            word = struct.unpack_from("<Q", buf, at)[0] ^ value
            struct.pack_into("<Q", buf, at, word)


def differing_pages(path_a, path_b, chunk=4 << 20, writes=None):
    """Pages that differ between two memory files (all, if sizes differ).
    With `writes` (lazy restore), they are applied to a's pages first."""
    sa, sb = os.path.getsize(path_a), os.path.getsize(path_b)
    if sa != sb:
        return max(sa, sb) // PAGE
    diff = 0
    a, b = bytearray(chunk), bytearray(chunk)
    pos = 0
    with open(path_a, "rb", buffering=0) as fa, open(path_b, "rb", buffering=0) as fb:
        while True:
            n, m = fa.readinto(a), fb.readinto(b)
            if not n and not m:
                break
            if n != m:
                return max(sa, sb) // PAGE
            if writes:
                apply_guest_writes(a, n, pos // PAGE, writes)
            pos += n
            if (a == b) if n == chunk else (a[:n] == b[:n]):
                continue
            for off in range(0, n, PAGE):
                if a[off:off + PAGE] != b[off:off + PAGE]:
                    diff += 1
    return diff


class Bench:
    def __init__(self, args):
        self.args = args
        self.p2bmig = args.p2bmig
        self.work = args.work_dir
        self.export = os.path.join(self.work, "export")
        self.mem_dir = os.path.join(self.work, "memory")
        self.nfs_state = os.path.join(self.work, "nfs-state")
        self.port = 20000
        self.split_cpus = os.cpu_count() >= 2 and not args.no_pin
        self.netns_env = dict(os.environ, QUEUE_MS=str(args.queue_ms))

    # --- hosts ---------------------------------------------------------------

    def hosts_up(self, first_link):
        # A NAS left running from an interrupted run lives on in the old
        # namespace: stop it before the namespaces are made again.
        subprocess.run(["bash", NFS_SERVER, "stop", self.nfs_state], stderr=subprocess.DEVNULL)
        os.makedirs(self.export, exist_ok=True)
        os.makedirs(self.mem_dir, exist_ok=True)
        run(["bash", NETNS, "up", first_link.rate, first_link.nas_rate], env=self.netns_env)
        env = dict(os.environ, NFS_NETNS=NAS_NS, NFS_BIND="0.0.0.0")
        run(["bash", NFS_SERVER, "start", self.export, self.nfs_state], env=env,
            stdout=subprocess.DEVNULL)

    def hosts_down(self):
        subprocess.run(["bash", NFS_SERVER, "stop", self.nfs_state], stderr=subprocess.DEVNULL)
        subprocess.run(["bash", NETNS, "down"])

    def shape(self, link):
        run(["bash", NETNS, "shape", link.rate, link.nas_rate], env=self.netns_env)

    # --- one migration ---------------------------------------------------------

    def pristine_image(self, memory):
        size = disk_size_for(memory)
        path = os.path.join(self.args.image_dir, f"pristine-{size}-{self.args.seed}.img")
        if not os.path.exists(path):
            log(f"creating a {size >> 20} MiB disk image {path}")
            os.makedirs(self.args.image_dir, exist_ok=True)
            run([self.p2bmig, "make-disk", path, "--size", str(size), "--seed",
                 str(self.args.seed)])
        return path

    def migrate(self, memory, link, workload, mode, image_name):
        self.port += 1
        addr = f"{TGT_ADDR}:{self.port}"
        src_mem = os.path.join(self.mem_dir, "source.mem")
        dst_mem = os.path.join(self.mem_dir, "target.mem")
        image = os.path.join(self.export, image_name)
        mem_arg = f"{memory >> 20}M"
        # The link is secured as in production: TLS 1.3 with a pre-shared key.
        psk = os.path.join(self.mem_dir, "link.psk")
        if not os.path.exists(psk):
            fd = os.open(psk, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(os.urandom(32).hex() + "\n")
        receive = ["ip", "netns", "exec", TGT_NS, self.p2bmig, "receive", "--listen", addr,
                   "--psk-file", psk,
                   "--memory", mem_arg, "--disk", link.nas_url(image_name),
                   "--memory-file", dst_mem, "--timeout", "600", "--json"]
        if self.args.max_gap is not None:
            receive += ["--max-gap", str(self.args.max_gap)]
        send = ["ip", "netns", "exec", SRC_NS, self.p2bmig, "send", "--to", addr, "--psk-file", psk,
                "--memory", mem_arg, "--disk", image, "--memory-file", src_mem,
                "--workload", workload, "--seed", str(self.args.seed), "--mode", mode,
                "--rate", "off", "--connect-wait", "30", "--json"]
        if self.args.max_unfetched is not None:
            send += ["--max-unfetched", str(self.args.max_unfetched)]
        if self.split_cpus:
            receive += ["--cpus", "1"]
            send += ["--cpus", "0"]
        t0 = time.monotonic()
        target = subprocess.Popen(receive, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            source = subprocess.run(send, capture_output=True, text=True,
                                    timeout=self.args.timeout)
            t_out, t_err = target.communicate(timeout=60 if source.returncode else
                                              self.args.timeout)
        except subprocess.TimeoutExpired:
            target.kill()
            target.communicate()
            raise RuntimeError(f"{mode} migration timed out after {self.args.timeout} s")
        wall = time.monotonic() - t0
        if source.returncode != 0 or target.returncode != 0:
            raise RuntimeError(f"{mode}: source exit {source.returncode}: "
                               f"{source.stderr.strip()[-500:]}; target exit "
                               f"{target.returncode}: {t_err.strip()[-500:]}")
        s = json.loads([l for l in source.stdout.splitlines() if l.startswith("{")][-1])
        t = json.loads([l for l in t_out.splitlines() if l.startswith("{")][-1])
        # Lazy restore: the target's guest ran and wrote its memory; the check
        # replays its logged writes onto the source's memory at the pause.
        lazy = t.get("lazy", False)
        writes_log = dst_mem + ".guest-writes"
        writes = load_guest_writes(writes_log) if lazy else None
        diff = differing_pages(src_mem, dst_mem, writes=writes)
        for f in (src_mem, dst_mem, writes_log):
            if os.path.exists(f):
                os.unlink(f)
        lb = link.lower_bound(s["memory_bytes"], s["page_cache_bytes"], s["zero_bytes"])
        # Complete: the guest resumed with all of its memory (paper mode), or
        # every page is present (lazy).
        complete_ns = t["all_present_ns"] if lazy else t["resume_ns"]
        extra = {}
        if lazy:
            extra = {k: t[k] for k in (
                "time_to_all_present_s", "missing_at_resume", "faults", "fault_latency_ms_p50",
                "fault_latency_ms_p99", "pages_from_source", "memory_ops_per_s_during",
                "memory_ops_per_s_after") if k in t}
        return {
            **extra,
            "lazy": lazy,
            "resume_s": (t["resume_ns"] - s["start_ns"]) / 1e9,
            "memory_ops_per_s_before": s.get("memory_ops_per_s", 0),
            "total_time_s": (complete_ns - s["start_ns"]) / 1e9,
            "downtime_s": (t["resume_ns"] - s["pause_ns"]) / 1e9,
            "link_bytes": s["link_bytes"],
            "nas_bytes": t["nas_bytes"],
            "lower_bound_s": lb,
            "memory_identical": diff == 0,
            "differing_pages": diff,
            "memory_bytes": s["memory_bytes"],
            "page_cache_bytes": s["page_cache_bytes"],
            "zero_bytes": s["zero_bytes"],
            "pages_data": s["pages_data"],
            "pages_mapped": s["pages_mapped"],
            "pages_zero": s["pages_zero"],
            "pages_resent": s.get("pages_resent", 0),
            "rounds": s["rounds"],
            "round_pages": s["round_pages"],
            # Phase timeline (CLOCK_REALTIME ns): when the stream and each
            # round began, the pause, the last byte written, the resume.
            "start_ns": s["start_ns"],
            "round_start_ns": s.get("round_start_ns", []),
            "pause_ns": s["pause_ns"],
            "end_ns": s["end_ns"],
            "resume_ns": t["resume_ns"],
            "mappings_invalidated": s.get("mappings_invalidated", 0),
            "pages_data_window_full": s.get("pages_data_window_full", 0),
            "pages_data_rewritten": s.get("pages_data_rewritten", 0),
            "fetches_superseded": t.get("fetches_superseded", 0),
            "final_pass_s": s.get("final_pass_s", 0),
            "credit_wait_s": s.get("credit_wait_s", 0),
            "catch_up_wait_s": s.get("pause_wait_s", 0),
            "fetch_wait_s": t["fetch_wait_s"],
            "nas_reads": t["nas_reads"],
            "hash_mismatches": t.get("hash_mismatches", 0),
            "guest_pages": s["guest_pages"],
            "wall_s": wall,
        }

    # --- the suite ---------------------------------------------------------------

    def run_suite(self):
        a = self.args
        sizes = [parse_size(x) for x in a.sizes.split(",")]
        links = [Link(x) for x in a.links.split(",")]
        workloads = a.workloads.split(",")
        modes = a.modes.split(",")
        runs = []
        started = time.time()
        load_before = os.getloadavg()
        self.hosts_up(links[0])
        try:
            for memory in sizes:
                pristine = self.pristine_image(memory)
                image_name = f"disk-{memory >> 20}M.img"
                for link in links:
                    self.shape(link)
                    for rep in range(a.reps):
                        for workload in workloads:
                            order = modes if rep % 2 == 0 else modes[::-1]
                            for mode in order:
                                runs.append(self.one(memory, link, workload, mode, rep,
                                                     pristine, image_name))
                                self.save(runs, started, load_before, partial=True)
                for f in os.listdir(self.export):
                    os.unlink(os.path.join(self.export, f))
        finally:
            if not a.keep_hosts:
                self.hosts_down()
        return self.save(runs, started, load_before, partial=False)

    def one(self, memory, link, workload, mode, rep, pristine, image_name):
        t = time.monotonic()
        restored = restore_image(pristine, os.path.join(self.export, image_name))
        restore_s = time.monotonic() - t
        entry = {"workload": workload, "link": link.name, "mode": mode,
                 "memory": f"{memory >> 20}M", "guest_memory_bytes": memory, "rep": rep,
                 "seed": self.args.seed, "load_1min": os.getloadavg()[0],
                 "image_restored_bytes": restored, "image_restore_s": restore_s}
        try:
            entry.update(self.migrate(memory, link, workload, mode, image_name))
            entry["ok"] = True
            log(f"{entry['memory']} {link.name} {workload} {mode} rep {rep}: "
                f"total {entry['total_time_s']:.2f} s, downtime "
                f"{entry['downtime_s'] * 1e3:.1f} ms, link {entry['link_bytes'] >> 20} MiB, "
                f"NAS {entry['nas_bytes'] >> 20} MiB, bound {entry['lower_bound_s']:.2f} s, "
                f"identical {entry['memory_identical']}")
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            entry.update(ok=False, error=str(e), memory_identical=False)
            log(f"{entry['memory']} {link.name} {workload} {mode} rep {rep}: FAILED: {e}")
        return entry

    def save(self, runs, started, load_before, partial):
        a = self.args
        result = {
            "suite": "quick" if a.quick else "custom" if a.custom else "full",
            "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
            .isoformat(timespec="seconds"),
            "duration_s": time.time() - started,
            "complete": not partial,
            "commit": subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                     capture_output=True, text=True).stdout.strip(),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "load_before": load_before, "load_after": os.getloadavg()},
            "parameters": {"sizes": a.sizes, "workloads": a.workloads, "links": a.links,
                           "modes": a.modes, "reps": a.reps, "seed": a.seed,
                           "max_gap": a.max_gap, "max_unfetched": a.max_unfetched,
                           "queue_ms": a.queue_ms},
            "runs": runs,
        }
        os.makedirs(a.out, exist_ok=True)
        tmp = os.path.join(a.out, "results.json.tmp")
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, os.path.join(a.out, "results.json"))
        return result


# --- reporting -------------------------------------------------------------------


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def groups(result):
    """(memory, link, workload) -> mode -> [runs], in the order first seen."""
    out = {}
    for r in result["runs"]:
        if not r.get("ok"):
            continue
        key = (r["memory"], r["link"], r["workload"])
        out.setdefault(key, {}).setdefault(r["mode"], []).append(r)
    return out


def fmt_s(x):
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_b(x):
    return f"{x / (1 << 20):.0f} MiB" if x >= 1 << 20 else f"{x / 1024:.0f} KiB"


def phase_table(result, modes):
    """Where the time goes, per workload and mode (medians): the rounds
    (pages per round, of the first repetition), the source's waits for the
    target's fetches (for credits during a round, and before pausing), the
    target's wait at END for its last fetches (in the downtime), the rates
    achieved on the migration link (until the last byte) and from the NAS
    (over the whole migration), and the mappable pages sent as data."""
    g = groups(result)
    lines = ["", "Phases (medians): `credit wait` = source waiting for fetch credits with the "
             "guest running, `pre-pause wait` = waiting for the target's fetches before the "
             "pause, `END wait` = target waiting for its last fetches after the stream's end "
             "(downtime), `link`/`NAS` = MB/s achieved (link: until the last byte; NAS: over "
             "the whole migration), `data: full/rewritten` = mappable pages sent as data "
             "because the fetch window was full / their block was being rewritten.", "",
             "| guest | link | workload | mode | rounds (pages, first rep) | credit wait | "
             "pre-pause wait | END wait | link MB/s | NAS MB/s | data: full/rewritten |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (mem, link, wl), by_mode in g.items():
        for mode in modes:
            rs = by_mode.get(mode)
            if not rs:
                continue

            def med(f):
                return median([f(r) for r in rs])

            timed = [r for r in rs if "end_ns" in r]
            link_rate = (f"{median([r['link_bytes'] / max((r['end_ns'] - r['start_ns']) / 1e9, 1e-9) / 1e6 for r in timed]):.0f}"
                         if timed else "n/a")
            nas_rate = med(lambda r: r["nas_bytes"] / r["total_time_s"] / 1e6)
            lines.append(
                f"| {mem} | {link} | {wl} | {mode} | {rs[0]['round_pages']} | "
                f"{fmt_s(med(lambda r: r['credit_wait_s']))} | "
                f"{fmt_s(med(lambda r: r['catch_up_wait_s']))} | "
                f"{fmt_s(med(lambda r: r['fetch_wait_s']))} | {link_rate} | {nas_rate:.0f} | "
                f"{med(lambda r: r.get('pages_data_window_full', 0)):.0f}/"
                f"{med(lambda r: r.get('pages_data_rewritten', 0)):.0f} |")
    return lines


def load_range(result):
    loads = [r["load_1min"] for r in result["runs"] if "load_1min" in r]
    if not loads:
        return "n/a"
    return f"{min(loads):.1f}-{max(loads):.1f} (median {median(loads):.1f})"


def write_table(result, path):
    modes = result["parameters"]["modes"].split(",")
    g = groups(result)
    lines = [
        f"Suite `{result['suite']}`, started {result['started']}, "
        f"{result['duration_s'] / 60:.1f} min, {result['machine']['cpus']} CPUs, load average "
        f"{result['machine']['load_before'][0]:.1f} before / "
        f"{result['machine']['load_after'][0]:.1f} after"
        + (f" (highest of {len(result['parts'])} parts)" if result.get("parts") else "") + "; "
        f"1-minute load average at the start of each migration {load_range(result)}; "
        f"commit {result['commit']}.",
        "",
        "Medians over repetitions; in parentheses the ratio to the baseline of the same run "
        "set. `bound` is the lower bound max((M-P-Z)/B, P/B_nas); `x bound` is the mode's "
        "total time over it.",
        "",
        "| guest | link | workload | mode | n | total time | downtime | link bytes | NAS bytes "
        "| bound | x bound | identical |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for (mem, link, wl), by_mode in g.items():
        base = by_mode.get("baseline")
        for mode in modes:
            rs = by_mode.get(mode)
            if not rs:
                continue
            tt = median([r["total_time_s"] for r in rs])
            dt = median([r["downtime_s"] for r in rs])
            lb = median([r["link_bytes"] for r in rs])
            nb = median([r["nas_bytes"] for r in rs])
            bound = median([r["lower_bound_s"] for r in rs])
            ident = all(r["memory_identical"] for r in rs)

            def ratio(val, key):
                if mode == "baseline" or not base:
                    return ""
                b = median([r[key] for r in base])
                return f" ({val / b:.2f})" if b > 0 else ""

            if base and mode != "baseline":
                bt = median([r["total_time_s"] for r in base])
                bd = median([r["downtime_s"] for r in base])
                summary.setdefault((mem, link, mode), []).append((wl, tt / bt, dt / bd))
            lines.append(
                f"| {mem} | {link} | {wl} | {mode} | {len(rs)} | {fmt_s(tt)}"
                f"{ratio(tt, 'total_time_s')} | {fmt_s(dt)}{ratio(dt, 'downtime_s')} | "
                f"{fmt_b(lb)}{ratio(lb, 'link_bytes')} | {fmt_b(nb)} | {fmt_s(bound)} | "
                f"{tt / bound:.2f} | {'yes' if ident else 'NO'} |")
    lines += phase_table(result, modes)
    lazy_rows = [(k, rs) for k, by_mode in g.items() for m, rs in by_mode.items() if m == "lazy"]
    if lazy_rows:
        lines += ["", "Lazy restore (medians): the guest runs on the target from `resume`; "
                  "`all present` is when its last missing page was installed (total time = "
                  "resume + all present); guest memory operations per second before (source, "
                  "pre-copy), during (resume to all present) and after.", "",
                  "| guest | link | workload | resume | all present | faults | fault p50 / p99 "
                  "| from source | ops/s before / during / after |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (mem, link, wl), rs in lazy_rows:
            rs = [r for r in rs if r.get("ok")]
            if not rs:
                continue

            def med(key):
                return median([r.get(key, 0) for r in rs])
            lines.append(
                f"| {mem} | {link} | {wl} | {fmt_s(med('resume_s'))} | "
                f"{fmt_s(med('time_to_all_present_s'))} | {med('faults'):.0f} | "
                f"{med('fault_latency_ms_p50'):.1f} / {med('fault_latency_ms_p99'):.1f} ms | "
                f"{med('pages_from_source'):.0f} | {med('memory_ops_per_s_before'):.0f} / "
                f"{med('memory_ops_per_s_during'):.0f} / {med('memory_ops_per_s_after'):.0f} |")
    failed = [r for r in result["runs"] if not r.get("ok")]
    lines += ["", "Summary (ratios to the baseline; page-cache-heavy workloads: "
              + ", ".join(CACHE_HEAVY) + "):", ""]
    for (mem, link, mode), items in summary.items():
        heavy = [t for wl, t, _ in items if wl in CACHE_HEAVY]
        worse = [wl for wl, _, d in items if d > 1]
        avg = f"{1 - statistics.mean(heavy):.0%}" if heavy else "n/a"
        lines.append(
            f"* {mem}, {link}, {mode}: total time cut by {avg} on average on the "
            f"page-cache-heavy workloads (best {1 - min(t for _, t, _ in items):.0%}); "
            f"downtime above the baseline's on: {', '.join(worse) or 'none'}")
    if failed:
        lines += ["", f"**{len(failed)} runs failed**: " +
                  "; ".join(f"{r['memory']} {r['link']} {r['workload']} {r['mode']}: "
                            f"{r.get('error', '')[:200]}" for r in failed)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plots(result, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing (python3-matplotlib): no plots")
        return []
    modes = result["parameters"]["modes"].split(",")
    g = groups(result)
    written = []
    for mem, link in dict.fromkeys((k[0], k[1]) for k in g):
        wls = [k[2] for k in g if k[0] == mem and k[1] == link]
        fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
        panels = [("total_time_s", "total migration time (s)", 1),
                  ("downtime_s", "downtime (ms)", 1e3),
                  ("link_bytes", "bytes on the link (MiB)", 1 / (1 << 20)),
                  ("nas_bytes", "bytes read from the NAS (MiB)", 1 / (1 << 20))]
        width = 0.8 / len(modes)
        for ax, (key, title, scale) in zip(axes, panels):
            for i, mode in enumerate(modes):
                xs, ys = [], []
                for j, wl in enumerate(wls):
                    rs = g[(mem, link, wl)].get(mode)
                    if rs:
                        xs.append(j + (i - (len(modes) - 1) / 2) * width)
                        ys.append(median([r[key] for r in rs]) * scale)
                ax.bar(xs, ys, width, label=mode)
            if key == "total_time_s":
                for j, wl in enumerate(wls):
                    rs = [r for m in g[(mem, link, wl)].values() for r in m]
                    bound = median([r["lower_bound_s"] for r in rs])
                    ax.hlines(bound, j - 0.45, j + 0.45, colors="black", linewidth=2,
                              label="lower bound" if j == 0 else None)
            ax.set_title(title)
            ax.set_xticks(range(len(wls)))
            ax.set_xticklabels(wls, rotation=30, ha="right")
        axes[0].legend()
        fig.suptitle(f"{mem} guest, link {link} (medians)")
        fig.tight_layout()
        path = os.path.join(out, f"plot-{mem}-{link.replace('/', '_')}.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def merge_results(results):
    """One result from the parts of a suite run one after the other (each a
    results.json): their runs in order, the load averages' extremes, the
    summed duration, and each part's commit and parameters."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    merged = dict(first)
    merged["runs"] = [r for res in results for r in res["runs"]]
    merged["duration_s"] = sum(res["duration_s"] for res in results)
    merged["complete"] = all(res.get("complete") for res in results)
    commits = sorted({res["commit"] for res in results})
    merged["commit"] = ",".join(commits)
    params = dict(first["parameters"])
    for key in ("workloads", "sizes", "links"):
        seen = []
        for res in results:
            for x in res["parameters"][key].split(","):
                if x not in seen:
                    seen.append(x)
        params[key] = ",".join(seen)
    merged["parameters"] = params
    merged["parts"] = [{"started": res["started"], "commit": res["commit"],
                        "parameters": res["parameters"], "machine": res["machine"]}
                       for res in results]
    loads_before = [res["machine"]["load_before"][0] for res in results]
    loads_after = [res["machine"]["load_after"][0] for res in results]
    merged["machine"] = dict(first["machine"], load_before=[max(loads_before)] +
                             first["machine"]["load_before"][1:],
                             load_after=[max(loads_after)] + first["machine"]["load_after"][1:])
    return merged


# --- main ----------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CI profile: %s" % ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    p.add_argument("--sizes", help="guest memory sizes (default: full suite's %s)" % FULL["sizes"])
    p.add_argument("--workloads", help="workloads (default: all: %s)" % FULL["workloads"])
    p.add_argument("--links", help="links: RATE, RATE/NASRATE or RATE-shared "
                   "(default %s)" % FULL["links"])
    p.add_argument("--modes", default="baseline,p2bmig,lazy",
                   help="modes, as p2bmig send --mode takes them (default %(default)s)")
    p.add_argument("--reps", type=int, help="repetitions (default %d)" % FULL["reps"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-unfetched", type=int,
                   help="p2bmig send --max-unfetched (flow control window, in mappings; "
                   "default: the sender's)")
    p.add_argument("--queue-ms", type=int, default=50,
                   help="queue of each shaped link, in ms of its rate (tbf latency; "
                   "default %(default)s)")
    p.add_argument("--max-gap", type=int,
                   help="p2bmig receive --max-gap (blocks read to join two reads; default: "
                   "the receiver's)")
    p.add_argument("--out", default=os.path.join(ROOT, "build", "bench-results"),
                   help="directory for results.json, results.md, plots (default %(default)s)")
    p.add_argument("--work-dir", default="/dev/shm/p2bmig-bench",
                   help="the NAS export (disk images) and the memory files; tmpfs by default "
                   "(default %(default)s)")
    p.add_argument("--image-dir", default="/var/tmp/p2bmig-bench",
                   help="where pristine disk images are kept between runs (default %(default)s)")
    p.add_argument("--p2bmig", help="p2bmig binary (default: build it with scripts/build.sh)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per migration")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin source and target to CPUs 0 and 1")
    p.add_argument("--keep-hosts", action="store_true", help="leave namespaces and NAS running")
    p.add_argument("--report-only", metavar="RESULTS_JSON", nargs="+",
                   help="only write the table and plots of earlier results.json files (several: "
                   "runs of one suite split into parts, e.g. by --workloads, merged; written to "
                   "--out if given, else next to the first)")
    a = p.parse_args()

    if a.report_only:
        result = merge_results([json.load(open(f)) for f in a.report_only])
        if a.out == p.get_default("out"):
            a.out = os.path.dirname(os.path.abspath(a.report_only[0]))
        os.makedirs(a.out, exist_ok=True)
        if len(a.report_only) > 1:
            with open(os.path.join(a.out, "results.json"), "w") as f:
                json.dump(result, f, indent=1)
        write_table(result, os.path.join(a.out, "results.md"))
        write_plots(result, a.out)
        print(open(os.path.join(a.out, "results.md")).read())
        return 0

    profile = QUICK if a.quick else FULL
    a.custom = any(getattr(a, k) is not None for k in ("sizes", "workloads", "links", "reps"))
    for k, v in profile.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if os.geteuid() != 0:
        raise SystemExit("bench/run.py needs root (network namespaces, tc)")
    if a.p2bmig is None:
        run(["bash", os.path.join(ROOT, "scripts", "build.sh"), "p2bmig"])
        a.p2bmig = os.path.join(ROOT, "build", "p2bmig")
    a.p2bmig = os.path.abspath(a.p2bmig)
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup.sh")], check=True)

    # The namespaces and the NAS are the machine's: one run at a time.
    lock = open("/tmp/p2bmig-bench.lock", "w")
    if not _try_lock(lock):
        log("waiting for another benchmark run to finish")
    fcntl.flock(lock, fcntl.LOCK_EX)

    # A terminated run still takes its namespaces and NAS down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = Bench(a).run_suite()
    write_table(result, os.path.join(a.out, "results.md"))
    plots = write_plots(result, a.out)
    print(open(os.path.join(a.out, "results.md")).read())
    log(f"done in {result['duration_s'] / 60:.1f} min: {a.out}/results.json, results.md, "
        f"{len(plots)} plots")
    ok = all(r.get("ok") and r["memory_identical"] for r in result["runs"])
    return 0 if ok and result["runs"] else 1


def _try_lock(f):
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False


if __name__ == "__main__":
    sys.exit(main())
