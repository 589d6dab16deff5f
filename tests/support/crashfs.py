"""A file system that forgets what was not fsync'ed: power cuts for tests.

`kill -9` never loses the page cache, so it cannot catch a missing fsync: of a file, of a folder
after a rename, of SQLite's WAL. This FUSE file system (libfuse3 through mfusepy) passes every
operation through to a real folder, and beside it keeps what a disk would still hold after the
power went, in the strict POSIX model — stricter than ext4's `data=ordered`, under which a later
journal commit may happen to save a rename:

- a file's bytes (and its size) become durable when *that file* is fsync'ed or fdatasync'ed;
- a folder's entries (create, rename, unlink in it) become durable when *that folder* is fsync'ed,
  and then name whatever bytes their files had made durable (nothing, for a file never synced).

A power cut (`cut`) freezes every operation (one under way finishes first), writes what is durable
into a new folder — the disk as the next boot finds it — and ends the file system; the test then
mounts a new one over that folder. It can also fail the n-th fsync with EIO the way Linux does
(PostgreSQL's "fsyncgate": the dirty data is dropped, and a second fsync succeeds without saving
it), and report "no space" past a quota.

Run as `python -m tests.support.crashfs LIVE MOUNTPOINT CONTROL_SOCKET` (foreground; `CrashFs` does it).
Nodes are known by identities of our own, not by inode numbers, which the folder underneath
reuses once a file is gone. Metadata other than sizes (modes, times) is not tracked.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FAILED_FSYNC = "eio"


@dataclass
class _Node:
    """What a power cut would leave of one file or folder."""

    is_dir: bool
    entries: dict[str, int] = field(default_factory=dict)
    """A folder's durable entries: name → node id."""
    content: Path | None = None
    """A file's durable bytes (None: none ever made durable)."""
    dirty: list[tuple[int, int]] = field(default_factory=list)
    """Byte ranges written since the last fsync (offset, end)."""
    shared: bool = False
    """`content` is a hard link to the live file, unchanged since the mount (copied before a change)."""
    link: str | None = None
    """A symbolic link's target (made with it: durable with its folder's entry)."""


class CrashOperations:
    """The mfusepy operations. Every operation holds one lock: a cut waits for the one under way."""

    use_ns = True

    def __init__(self, live: Path, work: Path) -> None:
        self.live = live
        self.objects = work / "objects"
        self.objects.mkdir(parents=True)
        self._mutex = threading.RLock()
        self.nodes: dict[int, _Node] = {}
        self.ids: dict[int, int] = {}
        """Inode number underneath → node id, while the inode has a name in the live folder."""
        self.handles: dict[int, int] = {}
        """Open file handle → node id."""
        self._next_id = itertools.count(1)
        self.fsyncs = 0
        self.failed: list[str] = []
        self.failing: tuple[int, str] | None = None
        """(how many more matching fsyncs succeed, substring of the path): then one fails."""
        self.quota: int | None = None
        self.used = 0
        self.root = self._adopt_tree()

    # --- the durable model ---

    def _adopt_tree(self) -> int:
        """Everything present at mount is durable. Its bytes are kept by hard links (nothing copied, a
        100 MB instance included), until a write would change them."""
        def adopt(path: Path) -> int:
            info = path.lstat()
            node_id = self._new_id(info.st_ino)
            if stat.S_ISLNK(info.st_mode):
                self.nodes[node_id] = _Node(False, link=os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                node = self.nodes[node_id] = _Node(True)
                for child in sorted(os.listdir(path)):
                    node.entries[child] = adopt(path / child)
            else:
                kept = self.objects / str(node_id)
                os.link(path, kept)
                self.nodes[node_id] = _Node(False, content=kept, shared=True)
                self.used += info.st_size
            return node_id
        return adopt(self.live)

    def _new_id(self, inode: int) -> int:
        node_id = next(self._next_id)
        self.ids[inode] = node_id
        return node_id

    def _id_of(self, path: str) -> int:
        info = os.lstat(self._live(path))
        node_id = self.ids.get(info.st_ino)
        if node_id is None:  # not made through us (cannot happen while mounted): a new node
            node_id = self._new_id(info.st_ino)
            self.nodes[node_id] = _Node(stat.S_ISDIR(info.st_mode))
        return node_id

    def _forget_name(self, live_path: str) -> None:
        """`live_path` is about to lose its name: once its last, its inode number may be reused."""
        try:
            info = os.lstat(live_path)
        except FileNotFoundError:
            return
        node_id = self.ids.get(info.st_ino)
        ours = 1 if node_id is not None and self.nodes[node_id].shared else 0  # the hard link kept at mount
        if info.st_nlink - ours <= 1 or stat.S_ISDIR(info.st_mode):
            self.ids.pop(info.st_ino, None)
            if not stat.S_ISDIR(info.st_mode):
                self.used -= info.st_size

    def _live(self, path: str) -> str:
        return str(self.live) + path

    def _sync_file(self, node_id: int, fd: int) -> None:
        node = self.nodes[node_id]
        if node.shared:
            return  # unchanged since the mount
        if node.content is None:
            node.content = self.objects / str(node_id)
            node.content.touch()
        size = os.fstat(fd).st_size
        with open(node.content, "r+b") as kept:
            for offset, end in _merged(node.dirty):
                end = min(end, size)
                if end > offset:
                    kept.seek(offset)
                    kept.write(os.pread(fd, end - offset, offset))
            kept.truncate(size)
        node.dirty.clear()

    def _unshare(self, node_id: int) -> None:
        """Before the first change to a file present at mount: its durable bytes get their own copy."""
        node = self.nodes[node_id]
        if node.shared and node.content is not None:
            private = node.content.with_name(f"{node_id}.own")
            shutil.copyfile(node.content, private)
            node.content.unlink()
            node.content, node.shared = private, False

    def _sync_dir(self, node_id: int, path: str) -> None:
        node = self.nodes[node_id]
        node.entries = {name: self._id_of(f"{path.rstrip('/')}/{name}") for name in os.listdir(self._live(path))}

    def _fsync_fails(self, path: str) -> bool:
        if self.failing is None or self.failing[1] not in path:
            return False
        left, where = self.failing
        if left > 0:
            self.failing = (left - 1, where)
            return False
        self.failing = None
        self.failed.append(path)
        return True

    def write_image(self, image: Path) -> dict[str, int]:
        """The disk as the next boot finds it; returns how many files and folders it holds."""
        counts = {"files": 0, "folders": 0}

        def write(node_id: int, path: Path) -> None:
            node = self.nodes[node_id]
            if node.is_dir:
                path.mkdir()
                counts["folders"] += 1
                for name, child in node.entries.items():
                    write(child, path / name)
                return
            counts["files"] += 1
            if node.link is not None:
                os.symlink(node.link, path)
            elif node.content is None:
                path.touch()  # its name was made durable, its bytes never were
            else:
                os.link(node.content, path)  # nothing writes to it any more: shared, not copied
        write(self.root, image)
        return counts

    # --- mfusepy operations ---

    @contextmanager
    def _op(self) -> Iterator[None]:
        with self._mutex:
            yield

    def init(self, path: str) -> None:
        pass

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._op():
            info = os.fstat(fh) if fh in self.handles else os.lstat(self._live(path))
        return {key: getattr(info, key) for key in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")} | {
            "st_atime": info.st_atime_ns, "st_mtime": info.st_mtime_ns, "st_ctime": info.st_ctime_ns}

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._op():
            return [".", "..", *os.listdir(self._live(path))]

    def access(self, path: str, amode: int) -> None:
        with self._op():
            if not os.access(self._live(path), amode):
                raise OSError(errno.EACCES, "no access")

    def mkdir(self, path: str, mode: int) -> None:
        with self._op():
            os.mkdir(self._live(path), mode)
            self.nodes[self._new_id(os.lstat(self._live(path)).st_ino)] = _Node(True)

    def symlink(self, target: str, source: str) -> None:
        """`target` (a path in this file system) made a symbolic link to `source`."""
        with self._op():
            os.symlink(source, self._live(target))
            self.nodes[self._new_id(os.lstat(self._live(target)).st_ino)] = _Node(False, link=source)

    def readlink(self, path: str) -> str:
        with self._op():
            return os.readlink(self._live(path))

    def rmdir(self, path: str) -> None:
        with self._op():
            self._forget_name(self._live(path))
            os.rmdir(self._live(path))

    def unlink(self, path: str) -> None:
        with self._op():
            self._forget_name(self._live(path))
            os.unlink(self._live(path))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        with self._op():
            if flags:
                raise OSError(errno.EINVAL, "rename flags are not supported")
            self._forget_name(self._live(new))
            os.rename(self._live(old), self._live(new))

    def chmod(self, path: str, mode: int) -> None:
        with self._op():
            os.chmod(self._live(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        with self._op():
            os.chown(self._live(path), uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        with self._op():
            if times is None:
                os.utime(self._live(path))
            else:
                os.utime(self._live(path), ns=times)

    def create(self, path: str, mode: int, flags: int) -> int:
        with self._op():
            fd = os.open(self._live(path), _read_write(flags) | os.O_CREAT, mode)
            node_id = self._new_id(os.fstat(fd).st_ino)
            self.nodes[node_id] = _Node(False)
            self.handles[fd] = node_id
            return fd

    def open(self, path: str, flags: int) -> int:
        with self._op():
            fd = os.open(self._live(path), _read_write(flags) & ~(os.O_TRUNC | os.O_CREAT | os.O_EXCL))
            self.handles[fd] = self._id_of(path)
            if flags & os.O_TRUNC:
                self._truncate(fd, 0)
            return fd

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._op():
            return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._op():
            growth = max(0, offset + len(data) - os.fstat(fh).st_size)
            if self.quota is not None and self.used + growth > self.quota:
                raise OSError(errno.ENOSPC, "no space left (quota)")
            self._unshare(self.handles[fh])
            written = os.pwrite(fh, data, offset)
            self.used += growth
            self.nodes[self.handles[fh]].dirty.append((offset, offset + written))
            return written

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        with self._op():
            if fh is not None:
                self._truncate(fh, length)
                return
            fd = os.open(self._live(path), os.O_RDWR)
            try:
                self.handles[fd] = self._id_of(path)
                self._truncate(fd, length)
            finally:
                self.handles.pop(fd)
                os.close(fd)

    def _truncate(self, fd: int, length: int) -> None:
        size = os.fstat(fd).st_size
        if self.quota is not None and self.used + length - size > self.quota:
            raise OSError(errno.ENOSPC, "no space left (quota)")
        self._unshare(self.handles[fd])
        os.ftruncate(fd, length)
        self.used += length - size
        self.nodes[self.handles[fd]].dirty.append((min(size, length), max(size, length)))

    def flush(self, path: str, fh: int) -> None:
        pass

    def release(self, path: str, fh: int) -> None:
        with self._op():
            self.handles.pop(fh, None)
            os.close(fh)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        with self._op():
            self.fsyncs += 1
            if self._fsync_fails(path):
                self.nodes[self.handles[fh]].dirty.clear()  # as Linux: the pages are marked clean, unsaved
                raise OSError(errno.EIO, "injected fsync failure")
            self._sync_file(self.handles[fh], fh)

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        with self._op():
            self.fsyncs += 1
            if self._fsync_fails(path):
                raise OSError(errno.EIO, "injected fsync failure")
            self._sync_dir(self._id_of(path), path)

    def statfs(self, path: str) -> dict[str, int]:
        with self._op():
            real = os.statvfs(self._live(path))
            answer = {key: getattr(real, key) for key in (
                "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail",
                "f_namemax")}
            if self.quota is not None:
                answer.update(f_bsize=4096, f_frsize=4096, f_blocks=self.quota // 4096,
                              f_bfree=max(0, self.quota - self.used) // 4096,
                              f_bavail=max(0, self.quota - self.used) // 4096)
            return answer


def _read_write(flags: int) -> int:
    """Files underneath are opened for reading and writing whatever the caller asked (an fsync
    reads what it makes durable), never for appending (writes come with their offsets)."""
    return flags & ~(os.O_ACCMODE | os.O_APPEND) | os.O_RDWR


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for offset, end in sorted(ranges):
        if merged and offset <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((offset, end))
    return merged


def _serve_control(operations: CrashOperations, control: Path, mountpoint: Path) -> None:
    """One JSON command per connection: cut, fail_fsync, quota, stats."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(control))
    server.listen()
    while True:
        connection, _ = server.accept()
        with connection, connection.makefile("rw") as stream:
            command = json.loads(stream.readline())
            if command["op"] == "cut":
                operations._mutex.acquire()  # never released: from now on every operation waits
                counts = operations.write_image(Path(command["image"]))
                stream.write(json.dumps({"ok": True} | counts) + "\n")
                stream.flush()
                subprocess.run(["umount", "-l", str(mountpoint)], check=False)
                os._exit(0)
            with operations._mutex:
                if command["op"] == "fail_fsync":
                    operations.failing = (command["after"], command.get("path", ""))
                elif command["op"] == "quota":
                    operations.quota = command["bytes"]
                answer = {"ok": True, "fsyncs": operations.fsyncs, "failed": operations.failed,
                          "used": operations.used}
            stream.write(json.dumps(answer) + "\n")


class CrashFs:
    """A crash-simulating file system mounted at `mountpoint` over the folder `live` (started by
    `mount()`, in its own process, so that a cut can end it as a power cut ends a disk)."""

    def __init__(self, mountpoint: Path, work: Path) -> None:
        self.mountpoint = mountpoint
        self.work = work
        self.generation = 0
        self.live = work / "disk-0"
        self.live.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> Path:
        return self.work / f"control-{self.generation}"

    def mount(self) -> CrashFs:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([sys.executable, "-m", "tests.support.crashfs", str(self.live), str(self.mountpoint),
                                         str(self.control), str(self.work / f"state-{self.generation}")],
                                        cwd=Path(__file__).parents[2])
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mountpoint) or not self.control.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the crash file system did not mount at {self.mountpoint}")
            time.sleep(0.02)
        return self

    def ask(self, op: str, **arguments: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(str(self.control))
            connection.sendall((json.dumps({"op": op} | arguments) + "\n").encode())
            answer: dict[str, Any] = json.loads(connection.makefile().readline())
            return answer

    def cut(self) -> dict[str, Any]:
        """The power goes: operations freeze, what was durable becomes the disk. Mount again after."""
        image = self.work / f"disk-{self.generation + 1}"
        answer = self.ask("cut", image=str(image))
        assert self.process is not None
        self.process.wait(30)
        _unmount(self.mountpoint)
        shutil.rmtree(self.live, ignore_errors=True)
        shutil.rmtree(self.work / f"state-{self.generation}", ignore_errors=True)
        self.generation += 1
        self.live = image
        return answer

    def unmount(self) -> None:
        """Detach the mount (whoever still holds a file in it gets errors from now on) and end it."""
        if self.process is not None and self.process.poll() is None:
            _unmount(self.mountpoint)
            self.process.kill()  # libfuse's own SIGTERM handling reports an error; nothing is left to save
            self.process.wait(10)


def _unmount(mountpoint: Path) -> None:
    subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def main(live: str, mountpoint: str, control: str, state: str) -> None:
    import mfusepy

    operations = CrashOperations(Path(live), Path(state))
    threading.Thread(target=_serve_control, args=(operations, Path(control), Path(mountpoint)), daemon=True).start()
    # kernel_cache: nothing changes the files underneath while mounted, so the kernel need not drop a
    # file's pages at every open — which would pull SQLite's shared memory-mapped index out from
    # under the process that has it mapped while another opens it.
    mfusepy.FUSE(operations, mountpoint, foreground=True, fsname="crashfs", kernel_cache=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
