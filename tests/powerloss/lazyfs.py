"""A FUSE file system that forgets what was not synced: the disk of the power-loss suite.

In the manner of LazyFS (the file system Jepsen uses to lose unsynced writes), it mounts over a
backing folder and keeps in memory every change that has not been made durable; a "cut" drops
them all, as a power loss would, leaving in the backing folder only what was synced.

    python tests/powerloss/lazyfs.py BACKING MOUNTPOINT

Control is one JSON line per command on stdin, one JSON answer line on stdout:
``cut`` (drop everything unsynced), ``sync`` (make everything durable, as a clean shutdown
does), ``stats`` (sync calls counted per path since the last ``reset``), ``reset``. End of stdin
unmounts and exits; whatever is unsynced then is lost, as in a cut. The first stdout line is
``{"ready": true}`` once the mount is in place.

The model (stricter than ext4, as POSIX allows):

* File contents and size (write, truncate) become durable at fsync or fdatasync of that file,
  all of the file at once. A file's mode, owner and times live in memory only.
* Directory entries (create, mkdir, unlink, rmdir, rename) are kept in one ordered log. An fsync
  of a directory makes durable every logged change up to and including the last one that touched
  that directory, as a journal commits in order: a change never becomes durable before one made
  earlier. A rename touches both of its directories. An fsync of a file makes none of its entries
  durable: a new file whose folder was not synced is gone after a cut, whatever was synced in it.
  Because of the journal order, a new folder's own entry becomes durable with an fsync of the
  folder itself, as on a journaling file system such as ext4; a file system that orders nothing
  would also need an fsync of its parent.
* A cut drops every unsynced change and every open file, and the mount goes on serving the
  backing folder's contents, as a machine that rebooted.

The backing folder always holds exactly the durable state as a plain tree, so plain sqlite3 can
read it once the file system is unmounted. Durable writes to it are plain writes: the host itself
does not lose power. Every file's whole content is held in memory (test-sized files only). Links,
symbolic links, special files and extended attributes are not supported (ENOSYS).

The kernel is told to cache nothing (attribute and entry timeouts 0, no kept page cache), so a
cut shows through the mount at once; pages are still cached while a file is open, which is what
lets SQLite map its ``-shm`` file. POSIX locks are left to the kernel (pyfuse3 leaves the FUSE
lock operations out), which keeps SQLite's locking correct between processes on this machine.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

PAGE = 4096


@dataclass(eq=False, slots=True)
class Node:
    """A file or directory as the mount shows it now, with what of it is durable."""

    ino: int
    is_dir: bool
    mode: int
    """The full st_mode, type bits included."""
    uid: int = 0
    gid: int = 0
    times_ns: tuple[int, int, int] = (0, 0, 0)
    """atime, mtime, ctime."""
    parent: Node | None = None
    name: bytes = b""
    """Where the node is in the mount now; `parent` is None once it is unlinked (or the root)."""
    children: dict[bytes, Node] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    """The file's content as the mount shows it."""
    dirty: set[int] = field(default_factory=set)
    """Pages written since the last sync."""
    low_water: int = 0
    """The smallest size the file had since the last sync: every page from there on is
    rewritten at the next sync, so a shrink followed by growth leaves no stale bytes."""
    durable_parent: Node | None = None
    durable_name: bytes | None = None
    """The node's durable entry in the backing folder; None while it has none.
    Invariant: the durable entries form the tree the mount showed at some point of the log."""
    synced: bytes | None = None
    """Content made durable while the node had no durable entry: written to the backing folder
    if and when its entry becomes durable."""
    open_count: int = 0


@dataclass(frozen=True, slots=True)
class Link:
    """A new entry: create or mkdir."""

    parent: Node
    name: bytes
    node: Node


@dataclass(frozen=True, slots=True)
class Unlink:
    """A removed entry: unlink or rmdir."""

    parent: Node
    name: bytes
    node: Node


@dataclass(frozen=True, slots=True)
class Rename:
    """A moved entry, with the node it replaced, if any."""

    old_parent: Node
    old_name: bytes
    new_parent: Node
    new_name: bytes
    node: Node
    replaced: Node | None


EntryChange = Link | Unlink | Rename


def touches(change: EntryChange, directory: Node) -> bool:
    """Whether an fsync of `directory` must make `change` durable."""
    if isinstance(change, Rename):
        return directory in (change.old_parent, change.new_parent)
    return change.parent is directory


def _now_ns() -> int:
    return time.time_ns()


class LazyFS(pyfuse3.Operations):
    """The pyfuse3 operations: an in-memory tree over a backing folder that holds the durable
    state. Every handler runs to completion without awaiting, so the trio loop serialises them
    with the control commands (a cut never lands inside an operation)."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, backing: str) -> None:
        super().__init__()
        self.backing = os.fsencode(os.path.abspath(backing))
        self.nodes: dict[int, Node] = {}
        self.handles: dict[int, Node] = {}
        self.log: list[EntryChange] = []
        self.file_syncs: Counter[str] = Counter()
        self.dir_syncs: Counter[str] = Counter()
        self.cuts = 0
        self._next_ino = pyfuse3.ROOT_INODE
        self._next_fh = 1
        self.root = self._load()

    # ---- the durable image ------------------------------------------------------------------

    def _new_ino(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def _load(self) -> Node:
        """Build the tree from the backing folder (at start and after a cut), root inode first.

        Inode numbers are never reused, so the kernel's references to nodes from before a cut
        find nothing instead of another file.
        """
        self.nodes.clear()
        self.handles.clear()
        self.log.clear()
        info = os.stat(self.backing)
        root_ino = pyfuse3.ROOT_INODE
        if self._next_ino == root_ino:
            self._next_ino += 1
        root = Node(ino=root_ino, is_dir=True, mode=info.st_mode, uid=info.st_uid,
                    gid=info.st_gid, times_ns=(info.st_atime_ns, info.st_mtime_ns,
                                               info.st_ctime_ns))
        self.nodes[root.ino] = root
        self._load_children(root, self.backing)
        return root

    def _load_children(self, directory: Node, path: bytes) -> None:
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                info = entry.stat(follow_symlinks=False)
                if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                    continue
                node = Node(ino=self._new_ino(), is_dir=stat.S_ISDIR(info.st_mode),
                            mode=info.st_mode, uid=info.st_uid, gid=info.st_gid,
                            times_ns=(info.st_atime_ns, info.st_mtime_ns, info.st_ctime_ns),
                            parent=directory, name=entry.name,
                            durable_parent=directory, durable_name=entry.name)
                self.nodes[node.ino] = node
                directory.children[node.name] = node
                if node.is_dir:
                    self._load_children(node, entry.path)
                else:
                    with open(entry.path, "rb") as file:
                        node.data = bytearray(file.read())
                    node.low_water = len(node.data)

    def _durable_path(self, node: Node) -> bytes | None:
        parts: list[bytes] = []
        current = node
        while current is not self.root:
            if current.durable_parent is None or current.durable_name is None:
                return None
            parts.append(current.durable_name)
            current = current.durable_parent
        return os.path.join(self.backing, *reversed(parts)) if parts else self.backing

    def _required_path(self, node: Node) -> bytes:
        path = self._durable_path(node)
        if path is None:
            raise RuntimeError(f"no durable path for inode {node.ino}")
        return path

    def sync_file(self, node: Node) -> None:
        """Make the file's content and size durable: in its durable file, or held until its
        entry is."""
        path = self._durable_path(node)
        if path is None:
            node.synced = bytes(node.data)
        else:
            size = len(node.data)
            pages = set(node.dirty)
            pages.update(range(node.low_water // PAGE, (size + PAGE - 1) // PAGE))
            fd = os.open(path, os.O_WRONLY)
            try:
                for page in sorted(pages):
                    chunk = node.data[page * PAGE:(page + 1) * PAGE]
                    if chunk:
                        os.pwrite(fd, chunk, page * PAGE)
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        node.dirty.clear()
        node.low_water = len(node.data)

    def sync_directory(self, directory: Node) -> None:
        """Make durable every logged entry change up to the last one touching `directory`."""
        last = max((i for i, c in enumerate(self.log) if touches(c, directory)), default=-1)
        for change in self.log[:last + 1]:
            self._apply(change)
        del self.log[:last + 1]

    def _apply(self, change: EntryChange) -> None:
        if isinstance(change, Link):
            path = os.path.join(self._required_path(change.parent), change.name)
            node = change.node
            if node.is_dir:
                os.mkdir(path, stat.S_IMODE(node.mode))
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(node.mode))
                try:
                    os.write(fd, node.synced or b"")
                finally:
                    os.close(fd)
                node.synced = None
            node.durable_parent, node.durable_name = change.parent, change.name
        elif isinstance(change, Unlink):
            node = change.node
            path = self._required_path(node)
            if node.is_dir:
                os.rmdir(path)
            else:
                os.unlink(path)
            node.durable_parent = node.durable_name = None
        else:
            source = self._required_path(change.node)
            target = os.path.join(self._required_path(change.new_parent), change.new_name)
            os.replace(source, target)
            if change.replaced is not None:
                change.replaced.durable_parent = change.replaced.durable_name = None
            change.node.durable_parent = change.new_parent
            change.node.durable_name = change.new_name

    def sync_all(self) -> dict[str, Any]:
        """What a clean shutdown does (syncfs): every change becomes durable, none is counted."""
        for node in list(self.nodes.values()):
            if not node.is_dir:
                self.sync_file(node)
        for change in self.log:
            self._apply(change)
        self.log.clear()
        return {"synced": True}

    def cut(self) -> dict[str, Any]:
        """Power loss: forget every unsynced change and open file; the backing folder is all."""
        dropped_changes = len(self.log)
        dirty_files = sum(
            1 for n in self.nodes.values()
            if not n.is_dir and (n.dirty or n.low_water != len(n.data))
        )
        self.root = self._load()
        self.cuts += 1
        return {"cut": True, "dropped_entry_changes": dropped_changes,
                "dirty_files": dirty_files}

    def stats(self) -> dict[str, Any]:
        """Sync calls per path (as the mount named the file at the call) since the last reset."""
        return {"file_syncs": dict(self.file_syncs), "dir_syncs": dict(self.dir_syncs),
                "pending_entry_changes": len(self.log), "cuts": self.cuts}

    def reset(self) -> dict[str, Any]:
        """Start counting syncs again from zero."""
        self.file_syncs.clear()
        self.dir_syncs.clear()
        return {"reset": True}

    # ---- helpers for the handlers ------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _handle(self, fh: int) -> Node:
        try:
            return self.handles[fh]
        except KeyError:
            raise pyfuse3.FUSEError(errno.EBADF) from None

    def _directory(self, ino: int) -> Node:
        node = self._node(ino)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node

    def _path_of(self, node: Node) -> str:
        parts: list[bytes] = []
        current: Node | None = node
        while current is not None and current is not self.root:
            if current.parent is None:
                return "<unlinked>"
            parts.append(current.name)
            current = current.parent
        return "/" + "/".join(os.fsdecode(p) for p in reversed(parts))

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.ino
        attrs.generation = 0
        attrs.entry_timeout = 0
        attrs.attr_timeout = 0
        attrs.st_mode = node.mode
        attrs.st_nlink = (2 + sum(1 for c in node.children.values() if c.is_dir)
                          if node.is_dir else (1 if node.parent is not None else 0))
        attrs.st_uid = node.uid
        attrs.st_gid = node.gid
        attrs.st_rdev = 0
        size = 4096 if node.is_dir else len(node.data)
        attrs.st_size = size
        attrs.st_blksize = PAGE
        attrs.st_blocks = (size + 511) // 512
        attrs.st_atime_ns, attrs.st_mtime_ns, attrs.st_ctime_ns = node.times_ns
        return attrs

    def _touch(self, node: Node) -> None:
        now = _now_ns()
        node.times_ns = (node.times_ns[0], now, now)

    def _new_node(self, parent: Node, name: bytes, mode: int, is_dir: bool,
                  ctx: pyfuse3.RequestContext) -> Node:
        if name in parent.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        now = _now_ns()
        node = Node(ino=self._new_ino(), is_dir=is_dir, mode=mode, uid=ctx.uid, gid=ctx.gid,
                    times_ns=(now, now, now), parent=parent, name=name)
        self.nodes[node.ino] = node
        parent.children[name] = node
        self.log.append(Link(parent, name, node))
        self._touch(parent)
        return node

    def _open_handle(self, node: Node) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = node
        node.open_count += 1
        return fh

    def _close_handle(self, fh: int) -> None:
        node = self.handles.pop(fh, None)
        if node is not None:
            node.open_count -= 1

    # ---- the handlers ---------------------------------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """Find an entry of a directory."""
        parent = self._directory(parent_inode)
        if name == b".":
            return self._attrs(parent)
        if name == b"..":
            return self._attrs(parent.parent or self.root)
        node = parent.children.get(name)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(node)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """Attributes of a node."""
        return self._attrs(self._node(inode))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """Truncate, chmod, chown, utimes: in memory until a sync (size) or never (the rest)."""
        node = self._node(inode) if fh is None else self._handle(fh)
        atime, mtime, ctime = node.times_ns
        if fields.update_size:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            size = attr.st_size
            if size < len(node.data):
                del node.data[size:]
                node.low_water = min(node.low_water, size)
            else:
                node.data.extend(bytes(size - len(node.data)))
            mtime = ctime = _now_ns()
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
            ctime = _now_ns()
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            atime = attr.st_atime_ns
        if fields.update_mtime:
            mtime = attr.st_mtime_ns
        node.times_ns = (atime, mtime, ctime)
        return self._attrs(node)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        """A new directory, durable at an fsync of its parent."""
        parent = self._directory(parent_inode)
        node = self._new_node(parent, name, stat.S_IFDIR | stat.S_IMODE(mode), True, ctx)
        return self._attrs(node)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext,
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        """A new file, opened; its entry is durable at an fsync of its parent."""
        parent = self._directory(parent_inode)
        if not stat.S_ISREG(mode):
            raise pyfuse3.FUSEError(errno.ENOSYS)
        node = self._new_node(parent, name, mode, False, ctx)
        return pyfuse3.FileInfo(fh=self._open_handle(node)), self._attrs(node)

    def _remove(self, parent_inode: int, name: bytes, *, directory: bool) -> None:
        parent = self._directory(parent_inode)
        node = parent.children.get(name)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if directory and not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if not directory and node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if node.children:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        del parent.children[name]
        node.parent = None
        self.log.append(Unlink(parent, name, node))
        self._touch(parent)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        """Remove a file's entry, durably at an fsync of the directory."""
        self._remove(parent_inode, name, directory=False)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        """Remove an empty directory, durably at an fsync of its parent."""
        self._remove(parent_inode, name, directory=True)

    async def rename(  # noqa: PLR0917 (pyfuse3 calls it with positional arguments)
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
        flags: int, ctx: pyfuse3.RequestContext,
    ) -> None:
        """Move an entry (replacing the target), durably at an fsync of either directory."""
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old_parent = self._directory(parent_inode_old)
        new_parent = self._directory(parent_inode_new)
        node = old_parent.children.get(name_old)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        target = new_parent.children.get(name_new)
        if target is node:
            return
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if target.is_dir and not node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if target.children:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        ancestor: Node | None = new_parent
        while ancestor is not None:
            if ancestor is node:
                raise pyfuse3.FUSEError(errno.EINVAL)
            ancestor = ancestor.parent
        del old_parent.children[name_old]
        if target is not None:
            target.parent = None
        new_parent.children[name_new] = node
        node.parent, node.name = new_parent, name_new
        self.log.append(Rename(old_parent, name_old, new_parent, name_new, node, target))
        self._touch(old_parent)
        self._touch(new_parent)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        """Open a file: a handle on its node (no kept page cache, no direct I/O)."""
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=self._open_handle(node))

    async def read(self, fh: int, off: int, size: int) -> bytes:
        """Bytes of the file as the mount shows it."""
        return bytes(self._handle(fh).data[off:off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        """Write into memory; the pages are durable at the next sync of the file."""
        node = self._handle(fh)
        end = off + len(buf)
        if off > len(node.data):
            node.data.extend(bytes(off - len(node.data)))
        node.data[off:end] = buf
        if buf:
            node.dirty.update(range(off // PAGE, (end - 1) // PAGE + 1))
        self._touch(node)
        return len(buf)

    async def flush(self, fh: int) -> None:
        """close(): nothing to do, closing syncs nothing."""
        self._handle(fh)

    async def release(self, fh: int) -> None:
        """The last reference to an open file went away."""
        self._close_handle(fh)

    async def fsync(self, fh: int, datasync: bool) -> None:
        """fsync/fdatasync: the file's content and size become durable."""
        node = self._handle(fh)
        self.sync_file(node)
        self.file_syncs[self._path_of(node)] += 1

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        """Open a directory (for readdir and fsyncdir)."""
        return self._open_handle(self._directory(inode))

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """The directory's entries as the mount shows them, in name order."""
        node = self._handle(fh)
        entries = sorted(node.children.items())
        for index in range(start_id, len(entries)):
            name, child = entries[index]
            if not pyfuse3.readdir_reply(token, name, self._attrs(child), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        """Close a directory."""
        self._close_handle(fh)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """fsync of a directory: its entry changes (and every earlier one) become durable."""
        node = self._handle(fh)
        self.sync_directory(node)
        self.dir_syncs[self._path_of(node)] += 1

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """The backing file system's figures."""
        info = os.statvfs(self.backing)
        data = pyfuse3.StatvfsData()
        data.f_bsize = info.f_bsize
        data.f_frsize = info.f_frsize
        data.f_blocks = info.f_blocks
        data.f_bfree = info.f_bfree
        data.f_bavail = info.f_bavail
        data.f_files = info.f_files
        data.f_ffree = info.f_ffree
        data.f_favail = info.f_favail
        data.f_namemax = info.f_namemax
        return data


def iter_tree(root: str) -> Iterator[tuple[str, bytes | None]]:
    """(relative path, content or None for a directory) for every entry under `root`, sorted."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        relative = os.path.relpath(folder, root)
        for name in dirs:
            yield os.path.normpath(os.path.join(relative, name)), None
        for name in sorted(files):
            with open(os.path.join(folder, name), "rb") as file:
                yield os.path.normpath(os.path.join(relative, name)), file.read()


async def _control(fs: LazyFS, commands: trio.abc.ReceiveStream) -> None:
    """Answer control lines until stdin ends."""
    commands_by_name = {"cut": fs.cut, "sync": fs.sync_all, "stats": fs.stats,
                        "reset": fs.reset}
    buffer = b""
    while True:
        chunk = await commands.receive_some(4096)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            name = line.decode().strip()
            if not name:
                continue
            command = commands_by_name.get(name)
            answer = command() if command else {"error": f"unknown command {name!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


async def serve(fs: LazyFS, mountpoint: str) -> None:
    """Mount, say ready, serve until stdin ends, unmount."""
    options = set(pyfuse3.default_options)
    options.add("fsname=lazyfs")
    options.add("subtype=lazyfs")
    pyfuse3.init(fs, mountpoint, options)
    try:
        sys.stdout.write(json.dumps({"ready": True}) + "\n")
        sys.stdout.flush()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            await _control(fs, trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())))
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)


def main(argv: list[str] | None = None) -> int:
    """`lazyfs.py BACKING MOUNTPOINT`: serve until stdin ends."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: lazyfs.py BACKING MOUNTPOINT\n")
        return 2
    backing, mountpoint = args
    trio.run(serve, LazyFS(backing), mountpoint)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
