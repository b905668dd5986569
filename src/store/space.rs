//! The store's files on disk: how big they are and how much room their
//! filesystem has left (what `/metrics` shows for disk alerts, without a
//! node exporter on the box).
//!
//! Reads file metadata and `statvfs` only; it must not open or write the
//! store.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Sizes in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreSpace {
    /// The database file.
    pub db: u64,
    /// Its write-ahead log (`-wal`; 0 when there is none).
    pub wal: u64,
    /// Space an unprivileged process may still use on the store's filesystem.
    pub fs_avail: u64,
    /// That filesystem's size.
    pub fs_size: u64,
}

impl StoreSpace {
    /// The files of the store at `db` and the room left beside them.
    pub fn of(db: &Path) -> io::Result<StoreSpace> {
        let size = |p: &Path| match std::fs::metadata(p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        };
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let (fs_avail, fs_size) = filesystem(db)?;
        Ok(StoreSpace {
            db: size(db)?,
            wal: size(Path::new(&wal))?,
            fs_avail,
            fs_size,
        })
    }
}

/// (available, size) in bytes of the filesystem holding `path`.
// `statvfs` fields are 32 bits wide on some targets.
#[allow(clippy::useless_conversion)]
fn filesystem(path: &Path) -> io::Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to memory
    // for one `statvfs`, which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    let frsize = u64::from(st.f_frsize);
    Ok((
        u64::from(st.f_bavail).saturating_mul(frsize),
        u64::from(st.f_blocks).saturating_mul(frsize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_the_database_and_its_wal_and_sees_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("planbox.db");
        std::fs::write(&db, vec![0u8; 8192]).unwrap();
        let s = StoreSpace::of(&db).unwrap();
        assert_eq!((s.db, s.wal), (8192, 0));
        assert!(s.fs_size > 0 && s.fs_avail <= s.fs_size, "{s:?}");
        std::fs::write(dir.path().join("planbox.db-wal"), [1u8; 100]).unwrap();
        assert_eq!(StoreSpace::of(&db).unwrap().wal, 100);
        assert!(StoreSpace::of(&dir.path().join("missing/planbox.db")).is_err());
    }
}
