#!/usr/bin/env python3
"""Name-heavy workloads: cmkfs with encrypted names beside cmkfs with --plaintext-names,
gocryptfs (which encrypts names too) and the plain backing directory.

For each filesystem, in one run on one machine, `--rounds` times interleaved:
  create   10,000 empty files in one directory (xargs touch), files/s
  lookup   stat of those 10,000 names in shuffled order after a remount (cold caches), names/s
  readdir  `ls` of the 10,000-entry directory after a remount, entries/s
  ls -lR   of a 50 x 200 tree (10,000 files) after a remount, s

Run as root from the repository after a release build:
  swift build -c release --product cmkfs && bench/names.py --binary .build/release/cmkfs
Not part of `swift test`.
"""
import argparse, os, random, statistics, subprocess, sys, tempfile, time

N = 10_000


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, text=True, capture_output=True)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Plain:
    def __init__(self, work, name="plain"):
        self.name, self.mnt = name, os.path.join(work, name)
        os.makedirs(self.mnt)
    def mount(self): pass
    def unmount(self): pass


class CMKFS:
    def __init__(self, work, binary, plaintext_names):
        self.name = "cmkfs (plaintext names)" if plaintext_names else "cmkfs (encrypted names)"
        tag = "plain" if plaintext_names else "enc"
        self.binary, self.vol, self.mnt = binary, os.path.join(work, f"cmkfs-{tag}-vol"), os.path.join(work, f"cmkfs-{tag}-mnt")
        os.makedirs(self.mnt)
        extra = ["--plaintext-names"] if plaintext_names else []
        subprocess.run([binary, "init", self.vol, "--kms-dir", os.path.join(work, "kms")] + extra, check=True, capture_output=True)
    def mount(self):
        subprocess.run([self.binary, "mount", self.vol, self.mnt, "--kms-dir", os.path.dirname(self.vol) + "/kms"],
                       check=True, capture_output=True)
    def unmount(self): subprocess.run([self.binary, "unmount", self.mnt], check=True, capture_output=True)


class Gocryptfs:
    name = "gocryptfs"
    def __init__(self, work):
        self.cipher, self.mnt, self.pw = (os.path.join(work, "gc-cipher"), os.path.join(work, "gc-mnt"),
                                          os.path.join(work, "gc-pw"))
        os.makedirs(self.cipher); os.makedirs(self.mnt)
        with open(self.pw, "w") as f: f.write("benchmark\n")
        sh(f"gocryptfs -init -q -passfile {self.pw} {self.cipher}")
    def mount(self): sh(f"gocryptfs -q -passfile {self.pw} {self.cipher} {self.mnt} 2>/dev/null")
    def unmount(self): sh(f"fusermount3 -u {self.mnt}")


def timed(cmd):
    start = time.monotonic()
    sh(cmd)
    return time.monotonic() - start


def remount(fs):
    fs.unmount()
    drop_caches()
    fs.mount()


def one_round(fs, r, names_file):
    d = os.path.join(fs.mnt, f"r{r}")
    os.makedirs(d)
    out = {}
    out["create"] = N / timed(f"cd {d} && xargs touch < {names_file}")
    remount(fs)
    shuffled = names_file + ".shuf"
    out["lookup"] = N / timed(f"cd {d} && xargs stat -c %s < {shuffled} > /dev/null")
    remount(fs)
    out["readdir"] = N / timed(f"ls {d} > /dev/null")
    tree = os.path.join(fs.mnt, f"t{r}")
    sh(f"mkdir {tree} && cd {tree} && for i in $(seq 1 50); do mkdir d$i; (cd d$i && seq -f 'file-%05g.dat' 1 200 | xargs touch); done")
    remount(fs)
    out["ls -lR"] = timed(f"ls -lR {tree} > /dev/null")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".build/release/cmkfs"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cmkfs-names-bench-")
    names_file = os.path.join(work, "names")
    names = [f"document-{i:05d}-quarterly-report.txt" for i in range(N)]
    with open(names_file, "w") as f: f.write("\n".join(names) + "\n")
    random.shuffle(names)
    with open(names_file + ".shuf", "w") as f: f.write("\n".join(names) + "\n")
    fss = [CMKFS(work, args.binary, False), CMKFS(work, args.binary, True), Gocryptfs(work), Plain(work)]
    results = {fs.name: [] for fs in fss}
    try:
        for fs in fss: fs.mount()
        for r in range(args.rounds):
            for fs in fss:
                results[fs.name].append(one_round(fs, r, names_file))
    finally:
        for fs in fss:
            try: fs.unmount()
            except Exception as e: print(f"unmount {fs.name}: {e}", file=sys.stderr)
        sh(f"rm -rf {work}", check=False)
    cols = ["create", "lookup", "readdir", "ls -lR"]
    print(f"| filesystem | create files/s | lookup names/s (cold) | readdir entries/s (cold) | ls -lR 10,000 files s (cold) |")
    print("|---|---|---|---|---|")
    for name, rounds in results.items():
        cells = []
        for c in cols:
            v = [x[c] for x in rounds]
            med = statistics.median(v)
            cells.append(f"{med:,.0f} ({min(v):,.0f}–{max(v):,.0f})" if c != "ls -lR" else f"{med:.2f} ({min(v):.2f}–{max(v):.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
