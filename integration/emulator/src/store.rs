//! etcd access the way the apiserver's storage layer uses it: paged range reads, and writes
//! guarded by the key's mod_revision (optimistic concurrency).

use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp};

const PAGE_SIZE: i64 = 500;

/// An etcd client.
#[derive(Clone)]
pub struct Store {
    client: Client,
}

impl Store {
    /// Connects to the comma-separated endpoints.
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(30));
        let client = Client::connect(endpoints, Some(options))
            .await
            .context("connecting to etcd")?;
        Ok(Store { client })
    }

    /// Unconditional write (object creation).
    pub async fn put(&mut self, key: &str, value: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .put(key, value, None)
            .await
            .with_context(|| format!("put {key}"))?;
        Ok(())
    }

    /// Writes `value` only if `key` is still at `mod_revision`; false on a conflict.
    pub async fn replace(
        &mut self,
        key: &[u8],
        mod_revision: i64,
        value: Vec<u8>,
    ) -> anyhow::Result<bool> {
        Ok(self.replace_at(key, mod_revision, value).await?.is_some())
    }

    /// Like `replace`, and returns the revision of the write (None on a conflict).
    pub async fn replace_at(
        &mut self,
        key: &[u8],
        mod_revision: i64,
        value: Vec<u8>,
    ) -> anyhow::Result<Option<i64>> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.client.txn(txn).await.context("txn")?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map_or(0, |h| h.revision())))
    }

    /// Deletes one key.
    pub async fn delete(&mut self, key: &[u8]) -> anyhow::Result<()> {
        self.client.delete(key, None).await.context("delete")?;
        Ok(())
    }

    /// Makes every revision before now unreadable (what etcd's periodic compaction does), after
    /// one write under `marker` so that "now" is newer than any revision handed out so far.
    pub async fn compact_now(&mut self, marker: &str) -> anyhow::Result<i64> {
        let resp = self
            .client
            .put(marker, "x", None)
            .await
            .context("put marker")?;
        let revision = resp.header().map_or(0, |h| h.revision());
        self.client
            .compact(revision, None)
            .await
            .context("compact")?;
        Ok(revision)
    }

    /// Up to `limit` keys of `[start, end)` at `revision` (0: latest): the kvs, the revision
    /// read, how many keys the range holds in all, and whether more follow.
    pub async fn range_at(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: i64,
        revision: i64,
    ) -> Result<Range, RangeError> {
        let mut options = GetOptions::new().with_range(end.to_vec()).with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        match self.client.get(start, Some(options)).await {
            Ok(mut resp) => Ok(Range {
                revision: resp.header().map_or(0, |h| h.revision()),
                count: resp.count(),
                more: resp.more(),
                kvs: resp.take_kvs(),
            }),
            Err(e) if e.to_string().contains("compacted") => Err(RangeError::Compacted),
            Err(e) => Err(RangeError::Other(
                anyhow::Error::from(e).context("range read"),
            )),
        }
    }

    /// The current value of one key.
    pub async fn get(&mut self, key: &[u8]) -> anyhow::Result<Option<KeyValue>> {
        let mut resp = self.client.get(key, None).await.context("get")?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// One page of keys under `prefix`, starting at `start` (inclusive).
    pub async fn page(&mut self, prefix: &[u8], start: &[u8]) -> anyhow::Result<Page> {
        let options = GetOptions::new()
            .with_range(polykms_core::storage::prefix_end(prefix))
            .with_limit(PAGE_SIZE);
        let mut resp = self
            .client
            .get(start, Some(options))
            .await
            .context("range read")?;
        let more = resp.more();
        let kvs = resp.take_kvs();
        let next = match kvs.last() {
            Some(last) if more => {
                let mut n = last.key().to_vec();
                n.push(0);
                Some(n)
            }
            _ => None,
        };
        Ok(Page { kvs, next })
    }
}

/// A page of a range read.
pub struct Page {
    /// The keys and values.
    pub kvs: Vec<KeyValue>,
    /// Where the next page starts, if there is one.
    pub next: Option<Vec<u8>>,
}

/// A range read at a revision.
pub struct Range {
    /// The revision the read saw.
    pub revision: i64,
    /// Keys in the whole range.
    pub count: i64,
    /// More keys follow the ones returned.
    pub more: bool,
    /// The keys and values returned.
    pub kvs: Vec<KeyValue>,
}

/// Why a range read failed.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    /// The revision asked for is compacted away.
    #[error("required revision has been compacted")]
    Compacted,
    /// Anything else.
    #[error(transparent)]
    Other(anyhow::Error),
}
