//! `[server]` settings that say who may reach the socket: the peer check (`allowed_peers`,
//! `allowed_peer_uids`, `allowed_peer_gids`) and the socket file's mode and group
//! (`socket_mode`, `socket_group`).

use polykms_core::{PeerPolicy, SocketAccess};
use serde::Deserialize;

use super::{ConfigError, ServerConfig};

/// `allowed_peers`: check callers' credentials against the lists, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllowedPeers {
    /// Only `allowed_peer_uids` / `allowed_peer_gids` (default: uid 0 and the plugin's own).
    #[default]
    Listed,
    /// Anyone who can open the socket.
    Any,
}

impl ServerConfig {
    /// The peer check the socket enforces.
    pub fn peer_policy(&self) -> PeerPolicy {
        match self.allowed_peers {
            AllowedPeers::Any => PeerPolicy::Any,
            AllowedPeers::Listed => match &self.allowed_peer_uids {
                None => match PeerPolicy::default_for_this_process() {
                    PeerPolicy::Only { uids, .. } => PeerPolicy::Only {
                        uids,
                        gids: self.allowed_peer_gids.clone(),
                    },
                    any => any,
                },
                Some(uids) => PeerPolicy::Only {
                    uids: uids.clone(),
                    gids: self.allowed_peer_gids.clone(),
                },
            },
        }
    }

    /// The socket file's mode and group, checked.
    pub fn socket_access(&self) -> Result<SocketAccess, ConfigError> {
        let digits = self.socket_mode.trim_start_matches("0o");
        let mode = u32::from_str_radix(digits, 8).map_err(|_| {
            ConfigError(format!(
                "server.socket_mode: {:?} is not an octal mode such as \"0600\" or \"0660\"",
                self.socket_mode
            ))
        })?;
        if mode & !0o777 != 0 || mode & 0o600 != 0o600 {
            return Err(ConfigError(format!(
                "server.socket_mode: {:?} must give the owner read and write and set no other \
                 bits than rwx for owner and group",
                self.socket_mode
            )));
        }
        if mode & 0o007 != 0 {
            return Err(ConfigError(format!(
                "server.socket_mode: {:?} opens the socket to every local user; share it with a \
                 group instead (socket_group and \"0660\")",
                self.socket_mode
            )));
        }
        let group = self.socket_group.as_deref().map(group_id).transpose()?;
        if mode & 0o070 != 0 && group.is_none() {
            return Err(ConfigError(format!(
                "server.socket_mode: {:?} gives a group access: name it in server.socket_group",
                self.socket_mode
            )));
        }
        Ok(SocketAccess { mode, group })
    }
}

/// A group name or numeric gid, as `socket_group` gives it.
fn group_id(name: &str) -> Result<u32, ConfigError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| ConfigError(format!("server.socket_group: {name:?} is not a group name")))?;
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getgrnam_r writes only into `group` and `buf` (whose length it is given) and sets
    // `result` to `&group` or null; the strings it points into live in `buf`, unused after.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(ConfigError(format!(
            "server.socket_group: no group named {name:?} on this node (give a numeric gid, or \
             create the group)"
        )));
    }
    Ok(group.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(mode: &str, group: Option<&str>) -> ServerConfig {
        ServerConfig {
            socket_mode: mode.into(),
            socket_group: group.map(str::to_string),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn socket_mode_and_group_are_checked() {
        assert_eq!(
            server("0600", None).socket_access().unwrap(),
            SocketAccess {
                mode: 0o600,
                group: None
            }
        );
        assert_eq!(
            server("0660", Some("0")).socket_access().unwrap(),
            SocketAccess {
                mode: 0o660,
                group: Some(0)
            }
        );
        assert_eq!(
            server("0660", Some("root")).socket_access().unwrap().group,
            Some(0)
        );
        for (mode, group, says) in [
            ("0666", None, "every local user"),
            ("0660", None, "socket_group"),
            ("0400", None, "read and write"),
            ("rw", None, "octal"),
            ("0660", Some("no-such-group-here"), "no group named"),
        ] {
            let err = server(mode, group).socket_access().unwrap_err().0;
            assert!(
                err.contains(says) && err.starts_with("server.socket_"),
                "{err}"
            );
        }
    }

    #[test]
    fn peers_default_to_root_and_this_process_and_can_be_opened() {
        let mut s = ServerConfig::default();
        let PeerPolicy::Only { uids, gids } = s.peer_policy() else {
            panic!("listed by default")
        };
        assert!(uids.contains(&0) && gids.is_empty());
        s.allowed_peer_uids = Some(vec![1000]);
        s.allowed_peer_gids = vec![2000];
        assert_eq!(
            s.peer_policy(),
            PeerPolicy::Only {
                uids: vec![1000],
                gids: vec![2000]
            }
        );
        s.allowed_peers = AllowedPeers::Any;
        assert_eq!(s.peer_policy(), PeerPolicy::Any);
    }
}
