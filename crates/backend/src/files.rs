//! The files a backend's settings name, so that the binary treats them all alike.

use std::path::PathBuf;

/// Settings that name files: key files, CA bundles, token, PIN, secret and credential files.
///
/// The binary resolves every relative path against the config file's directory and reloads
/// when one of these files changes on disk (`[server] watch_config`). A backend's config type
/// implements this by listing each of its path fields, optional ones when set; a path left out
/// is taken as written and not watched.
pub trait ConfigFiles {
    /// Every file path the settings name, mutable so that relative ones can be resolved.
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf>;
}
