//! Files that hold a secret: written new, readable and writable by their owner only, and
//! refused when other users can read them, since a secret others can read is no longer
//! one. The deployment key and the demo's tokens are kept this way.

use std::io::Write as _;
use std::path::Path;

/// Writes `contents` to `path`, which must not exist yet, with mode 600, and syncs it.
pub fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// The permission bits of `path` when users other than its owner may read or write it;
/// `None` when it is private (always, off Unix).
pub fn exposed_mode(path: &Path) -> std::io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path)?;
        Ok(None)
    }
}
