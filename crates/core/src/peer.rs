//! Who may call the socket: every connection's peer credentials (SO_PEERCRED, read by the
//! kernel when the connection is made) are checked before any call on it is served. A refused
//! caller gets `PERMISSION_DENIED` naming its uid and the setting that would allow it, never
//! reaches a backend, is counted, and is logged once per uid (repeats are summarised like other
//! repeated failures). Works the same on path and abstract sockets: the kernel fills the
//! credentials for both, while file permissions protect only the first.

use std::sync::Arc;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::metrics::Metrics;
use crate::repeated::{self, FailureKind, Verdict};

/// Which peers may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// No check (`allowed_peers = "any"`): file permissions alone protect the socket.
    Any,
    /// A peer whose uid is in `uids` or whose gid is in `gids`.
    Only { uids: Vec<u32>, gids: Vec<u32> },
}

impl PeerPolicy {
    /// The default: root (kube-apiserver as a static pod or a systemd unit) and the plugin's
    /// own uid (an apiserver run as the same user, as in the image's tests).
    pub fn default_for_this_process() -> Self {
        // SAFETY: geteuid only reads the process's effective uid; it cannot fail.
        let own = unsafe { libc::geteuid() };
        let mut uids = vec![0];
        if own != 0 {
            uids.push(own);
        }
        PeerPolicy::Only {
            uids,
            gids: Vec::new(),
        }
    }

    fn allows(&self, uid: u32, gid: u32) -> bool {
        match self {
            PeerPolicy::Any => true,
            PeerPolicy::Only { uids, gids } => uids.contains(&uid) || gids.contains(&gid),
        }
    }
}

/// Checks each call's peer against the policy; cheap (two short list scans).
#[derive(Debug, Clone)]
pub struct PeerCheck {
    policy: Arc<PeerPolicy>,
    metrics: Arc<Metrics>,
    api: &'static str,
}

impl PeerCheck {
    pub fn new(policy: Arc<PeerPolicy>, metrics: Arc<Metrics>, api: &'static str) -> Self {
        PeerCheck {
            policy,
            metrics,
            api,
        }
    }

    /// The gRPC interceptor: passes the request on, or refuses it before the service sees it.
    pub fn intercept(&self, request: Request<()>) -> Result<Request<()>, Status> {
        if *self.policy == PeerPolicy::Any {
            return Ok(request);
        }
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let refusal = match cred {
            Some(cred) if self.policy.allows(cred.uid(), cred.gid()) => return Ok(request),
            Some(cred) => Refusal {
                uid: Some(cred.uid()),
                gid: Some(cred.gid()),
                pid: cred.pid(),
            },
            None => Refusal {
                uid: None,
                gid: None,
                pid: None,
            },
        };
        Err(self.refuse(&refusal))
    }

    fn refuse(&self, r: &Refusal) -> Status {
        self.metrics.peer_refused();
        let message = match r.uid {
            Some(uid) => format!(
                "polykms refused a caller running as uid {uid} (gid {}): add it to [server] \
                 allowed_peer_uids (or its group to allowed_peer_gids), or set allowed_peers = \
                 \"any\"",
                r.gid.unwrap_or(u32::MAX)
            ),
            None => "polykms refused a caller whose credentials the socket did not report: set \
                     [server] allowed_peers = \"any\" to serve it"
                .to_string(),
        };
        let kind = FailureKind {
            api: self.api,
            method: "-",
            backend: match r.uid {
                Some(uid) => format!("peer uid {uid}"),
                None => "peer unknown".into(),
            },
            outcome: "peer_refused",
        };
        if repeated::record(&kind, &message) == Verdict::Log {
            tracing::warn!(
                api = self.api,
                uid = r.uid,
                gid = r.gid,
                pid = r.pid,
                outcome = "peer_refused",
                "{message}"
            );
        }
        Status::permission_denied(message)
    }
}

struct Refusal {
    uid: Option<u32>,
    gid: Option<u32>,
    pid: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_listed_uids_or_gids_only() {
        let p = PeerPolicy::Only {
            uids: vec![0, 65532],
            gids: vec![1000],
        };
        assert!(p.allows(0, 5));
        assert!(p.allows(65532, 65532));
        assert!(p.allows(4242, 1000));
        assert!(!p.allows(65534, 65534));
        assert!(PeerPolicy::Any.allows(65534, 65534));
    }

    #[test]
    fn a_request_without_credentials_is_refused_unless_any() {
        let metrics = Arc::new(Metrics::new());
        let check = PeerCheck::new(
            Arc::new(PeerPolicy::default_for_this_process()),
            metrics.clone(),
            "v2",
        );
        let err = check.intercept(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("allowed_peers"), "{}", err.message());
        assert!(metrics.encode().contains("polykms_peer_refused_total 1"));
        let any = PeerCheck::new(Arc::new(PeerPolicy::Any), metrics, "v2");
        assert!(any.intercept(Request::new(())).is_ok());
    }
}
