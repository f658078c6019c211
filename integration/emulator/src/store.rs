//! etcd access the way the apiserver's storage layer uses it: paged range reads, and writes
//! guarded by the key's mod_revision (optimistic concurrency).

use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp};

const PAGE_SIZE: i64 = 500;

/// An etcd client.
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
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.client.txn(txn).await.context("txn")?;
        Ok(resp.succeeded())
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
