"""Fetching dataset files: where they live, resumable downloads, checksums, safe extraction.

- Root folder: ``$CNNKIT_DATA`` if set, else ``~/.cache/cnnkit`` (:func:`default_root`).
- A file is used only after its md5/sha256 matches the known value; a partial download
  sits in ``<name>.part`` and is resumed with an HTTP ``Range`` request; a corrupt file is
  never used silently (a user's copy that fails the check is reported, or, with
  ``download=True``, moved to ``<name>.corrupt`` and fetched again).
- Offline, or on a checksum mismatch, the :class:`CnnkitError` lists every expected file
  with its checksum, its URLs and the folder to put it in.
- Archives are checked member by member before anything is written (:func:`extract_archive`):
  absolute paths, ``..`` components, links leaving the target folder, device files,
  oversize members and too many members are refused; a damaged archive is a
  :class:`CnnkitError` naming it and the member, and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cnnkit._core.errors import CnnkitError

ENV_VAR = "CNNKIT_DATA"
CHUNK = 1 << 20
#: the largest archive member extracted, in bytes (``extract_archive(max_member_bytes=)``)
MAX_MEMBER_BYTES = 8 << 30
#: the most bytes one archive may extract to (``extract_archive(max_total_bytes=)``)
MAX_TOTAL_BYTES = 32 << 30
#: the most members one archive may hold (ImageNet's training tar has 1,281,167 files)
MAX_MEMBERS = 2_000_000
#: what a damaged archive raises while it is read
_ARCHIVE_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError,
    NotImplementedError, RuntimeError, ValueError,
)  # fmt: skip


def default_root() -> Path:
    """``$CNNKIT_DATA`` when set, else ``~/.cache/cnnkit``: the folder datasets live under."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnkit"


def dataset_folder(root: str | os.PathLike | None, name: str, markers: Sequence[str] = ()) -> Path:
    """The folder of dataset ``name``.

    ``root=None`` gives ``default_root()/name``. A given ``root`` is the dataset's own
    folder, unless none of ``markers`` (file or folder names the dataset holds) is in it
    and ``root/name`` holds one: then ``root`` is taken as the parent of all datasets.
    Downloads go to the folder returned.
    """
    if root is None:
        return default_root() / name
    root = Path(root).expanduser()
    if markers and not any((root / m).exists() for m in markers):
        if any((root / name / m).exists() for m in markers):
            return root / name
    return root


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset with its known checksum and the URLs it can be fetched from."""

    name: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    #: the first hex digits of the sha256 when only they are known (torch.hub's file
    #: names ``name-<first digits>.pth`` carry them); checked as a prefix
    sha256_prefix: str | None = None

    def checksum_text(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return (
                f"sha256 starting {self.sha256_prefix} (only its first "
                f"{len(self.sha256_prefix)} hex digits are known)"
            )
        return f"md5 {self.md5}" if self.md5 else "no known checksum"


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def checksum_problem(path: str | os.PathLike, remote: RemoteFile) -> str | None:
    """``None`` if ``path`` matches ``remote``'s size and checksums, else what is wrong."""
    size = os.path.getsize(path)
    if remote.size is not None and size != remote.size:
        return f"has {size} bytes, expected {remote.size} (truncated or corrupt)"
    for algorithm, expected in (("sha256", remote.sha256), ("md5", remote.md5)):
        if expected:
            got = file_digest(path, algorithm)
            if got.lower() != expected.lower():
                return f"has {algorithm} {got}, expected {expected} (corrupt or a different file)"
    if remote.sha256_prefix:
        got = file_digest(path, "sha256")
        if not got.lower().startswith(remote.sha256_prefix.lower()):
            return (
                f"has sha256 {got}, expected one starting {remote.sha256_prefix} (corrupt or "
                "a different file)"
            )
    return None


def _listing(
    dataset: str, folder: Path, files: Sequence[RemoteFile], status: dict[str, str]
) -> str:
    lines = [f"{dataset}: the files below are needed in {folder}"]
    for f in files:
        lines.append(f"  {f.name}: {status.get(f.name, 'ok')}")
        lines.append(f"      {f.checksum_text()}" + (f", {f.size} bytes" if f.size else ""))
        lines.extend(f"      from {url}" for url in f.urls)
    lines.append(
        f"Put them into {folder} (or set {ENV_VAR} to a folder holding '{folder.name}/'), "
        "or pass download=True to fetch them."
    )
    return "\n".join(lines)


def ensure_files(
    files: Sequence[RemoteFile],
    folder: str | os.PathLike,
    *,
    dataset: str,
    download: bool = False,
    verify: bool = True,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Paths of ``files`` in ``folder``, each checked against its checksum.

    Missing files are downloaded when ``download`` is true; otherwise, or when a download
    fails, a :class:`CnnkitError` lists what is needed, from where, and where it goes.
    A present file that fails its checksum is never used: it is reported, or with
    ``download=True`` moved to ``<name>.corrupt`` and fetched again.
    """
    folder = Path(folder)
    status: dict[str, str] = {}
    paths: dict[str, Path] = {}
    for f in files:
        path = folder / f.name
        if path.is_file():
            problem = checksum_problem(path, f) if verify else None
            if problem is None:
                paths[f.name] = path
                continue
            if not download:
                status[f.name] = f"present but {problem}"
                continue
            os.replace(path, path.with_name(path.name + ".corrupt"))
        if not download:
            status[f.name] = "missing"
            continue
        try:
            paths[f.name] = download_file(f, folder, timeout=timeout)
        except CnnkitError as err:
            status[f.name] = f"download failed: {err}"
    if status:
        raise CnnkitError(_listing(dataset, folder, files, status))
    return paths


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (resuming with a Range request)."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cnnkit-data"}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the range starts at the end: already complete
            return
        raise
    with response:
        resumed = start and getattr(response, "status", None) == 206
        if resumed:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                resumed = False
        # a server that ignores Range sends the whole file: start over
        length = response.headers.get("Content-Length")
        received = 0
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
        if length is not None and received < int(length):
            # a short read is not an error to urllib: keep the partial file for a resume
            raise ConnectionError(f"connection closed after {received} of {length} bytes")


def download_file(remote: RemoteFile, folder: str | os.PathLike, *, timeout: float = 60.0) -> Path:
    """Download ``remote`` into ``folder``, resuming ``<name>.part``; verify; return its path.

    Each URL is tried in turn. A resumed file that fails its checksum is fetched once more
    from scratch; a fresh one that fails is deleted and the next URL tried. Raises
    :class:`CnnkitError` naming every URL and what went wrong.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / remote.name
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in remote.urls:
        for attempt in range(2):
            resumed = part.exists() and part.stat().st_size > 0
            try:
                _fetch(url, part, timeout)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                errors.append(f"{url}: {err}")
                break  # keep the partial file for a later resume
            problem = checksum_problem(part, remote)
            if problem is None:
                os.replace(part, dest)
                return dest
            part.unlink()
            errors.append(f"{url}: the downloaded file {problem}")
            if not resumed or attempt:
                break
    raise CnnkitError(f"could not download {remote.name}: " + "; ".join(errors))


# ---------------------------------------------------------------- extraction


def _safe_target(dest: Path, name: str, archive: Path) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and ":" in pure.parts[0]):
        raise CnnkitError(f"{archive}: member {name!r} has an absolute path; refusing to extract.")
    if ".." in pure.parts:
        raise CnnkitError(f"{archive}: member {name!r} contains '..'; refusing to extract.")
    target = (dest / Path(*pure.parts)) if pure.parts else dest
    if not target.resolve().is_relative_to(dest.resolve()):
        raise CnnkitError(f"{archive}: member {name!r} leaves {dest}; refusing to extract.")
    return target


def _tar_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """The members of ``tar``, read header by header; stops after MAX_MEMBERS."""
    members = []
    try:
        for m in tar:
            members.append(m)
            if len(members) > MAX_MEMBERS:
                raise CnnkitError(
                    f"{archive}: more than {MAX_MEMBERS} members (cnnkit.data.download."
                    "MAX_MEMBERS); refusing to extract."
                )
    except _ARCHIVE_ERRORS as err:
        after = f" after member {members[-1].name!r}" if members else ""
        raise CnnkitError(
            f"{archive}: truncated or corrupt archive{after} ({type(err).__name__}: {err}); "
            "delete it and download it again."
        ) from err
    return members


def _check_tar(tar: tarfile.TarFile, dest: Path, archive: Path, max_member: int, max_total: int):
    total = 0
    members = _tar_members(tar, archive)
    for m in members:
        target = _safe_target(dest, m.name, archive)
        if m.issym() or m.islnk():
            link = PurePosixPath(m.linkname.replace("\\", "/"))
            if link.is_absolute():
                raise CnnkitError(
                    f"{archive}: link {m.name!r} points to the absolute path {m.linkname!r}; "
                    "refusing to extract."
                )
            base = target.parent if m.issym() else dest
            resolved = (base / Path(*link.parts)).resolve() if link.parts else base.resolve()
            if not resolved.is_relative_to(dest.resolve()):
                raise CnnkitError(
                    f"{archive}: link {m.name!r} -> {m.linkname!r} points outside {dest}; "
                    "refusing to extract."
                )
        elif not (m.isfile() or m.isdir()):
            raise CnnkitError(
                f"{archive}: member {m.name!r} is a device, fifo or other special file; "
                "refusing to extract."
            )
        if m.size > max_member:
            raise CnnkitError(
                f"{archive}: member {m.name!r} is {m.size} bytes, over the limit of "
                f"{max_member} (max_member_bytes); refusing to extract."
            )
        total += m.size
        if total > max_total:
            raise CnnkitError(
                f"{archive}: members add up to more than {max_total} bytes (max_total_bytes); "
                "refusing to extract."
            )
    return members


def _check_zip(zf: zipfile.ZipFile, dest: Path, archive: Path, max_member: int, max_total: int):
    total = 0
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CnnkitError(
            f"{archive}: {len(infos)} members, over the limit of {MAX_MEMBERS} "
            "(cnnkit.data.download.MAX_MEMBERS); refusing to extract."
        )
    for info in infos:
        _safe_target(dest, info.filename, archive)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise CnnkitError(f"{archive}: member {info.filename!r} is a link; refusing.")
        if info.file_size > max_member:
            raise CnnkitError(
                f"{archive}: member {info.filename!r} is {info.file_size} bytes, over the limit "
                f"of {max_member} (max_member_bytes); refusing to extract."
            )
        total += info.file_size
        if total > max_total:
            raise CnnkitError(
                f"{archive}: members add up to more than {max_total} bytes (max_total_bytes); "
                "refusing to extract."
            )


def extract_archive(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    max_member_bytes: int | None = None,
    max_total_bytes: int | None = None,
) -> Path:
    """Extract a tar (plain, gz, bz2, xz) or zip ``archive`` into ``dest`` safely.

    Every member is checked before anything is written: absolute paths, ``..``, links
    whose target leaves ``dest``, special files, more than :data:`MAX_MEMBERS` members and
    members over ``max_member_bytes`` (default :data:`MAX_MEMBER_BYTES`; or a total over
    ``max_total_bytes``, default :data:`MAX_TOTAL_BYTES`) raise :class:`CnnkitError` naming
    the member. A damaged archive (truncated, a bad CRC, a member whose data is missing)
    raises :class:`CnnkitError` naming the archive and the member. The archive is extracted
    into a temporary folder inside ``dest`` and moved into place only once complete, so a
    failed or interrupted extraction leaves nothing behind (``dest`` itself is removed
    again if this call created it).
    """
    archive, dest = Path(archive), Path(dest)
    max_member = MAX_MEMBER_BYTES if max_member_bytes is None else max_member_bytes
    max_total = MAX_TOTAL_BYTES if max_total_bytes is None else max_total_bytes
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extracting-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    done = False
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, staging, max_member, max_total)
        else:
            _extract_tar(archive, staging, max_member, max_total)
        for entry in staging.iterdir():
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not done:
            shutil.rmtree(dest, ignore_errors=True)
    return dest


def _extract_zip(archive: Path, staging: Path, max_member: int, max_total: int) -> None:
    member = None
    try:
        with zipfile.ZipFile(archive) as zf:
            _check_zip(zf, staging, archive, max_member, max_total)
            for member in zf.infolist():
                zf.extract(member, staging)
    except CnnkitError:
        raise
    except _ARCHIVE_ERRORS as err:
        where = f" (member {member.filename!r})" if member is not None else ""
        raise CnnkitError(
            f"{archive}: truncated or corrupt zip archive{where}: {type(err).__name__}: {err}; "
            "delete it and download it again."
        ) from err


def _extract_tar(archive: Path, staging: Path, max_member: int, max_total: int) -> None:
    try:
        tar = tarfile.open(archive)
    except _ARCHIVE_ERRORS as err:
        raise CnnkitError(f"{archive}: not a readable tar or zip archive ({err}).") from err
    with tar:
        members = _check_tar(tar, staging, archive, max_member, max_total)
        for m in members:
            try:
                if hasattr(tarfile, "data_filter"):
                    tar.extract(m, staging, filter="data")
                else:  # pragma: no cover - Python < 3.10.12; members were checked above
                    tar.extract(m, staging)
            except _ARCHIVE_ERRORS as err:
                raise CnnkitError(
                    f"{archive}: truncated or corrupt archive (member {m.name!r}: "
                    f"{type(err).__name__}: {err}); delete it and download it again."
                ) from err
