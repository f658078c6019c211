//! The client-side run: list each resource in pages, rewrite the objects of a page with
//! `--concurrency` workers, record how far it got, stop cleanly on a signal or an RBAC denial.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::Client;

use super::api::{MetaPage, ResourceUrls};
use super::progress::Progress;
use super::resources::{self, Resolved};
use super::rewrite::{self, Outcome, RateLimiter, Rewriter};
use super::state::{Cursor, State, StateFile};
use super::summary::{ResourceSummary, Summary};
use super::{Options, ReencryptError, StopFlag, cluster, svm};

/// The state file is written at least this often while objects are being handled.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Relists per resource before giving up (each one follows a 410 or a refused token).
const MAX_RELISTS: u64 = 1000;

fn validate(options: &Options) -> Result<(), ReencryptError> {
    resources::validate(&options.resources)?;
    if options.concurrency == 0 || options.concurrency > 256 {
        return Err(ReencryptError::Config(
            "--concurrency must be between 1 and 256".into(),
        ));
    }
    if !options.qps.is_finite() || options.qps < 0.0 {
        return Err(ReencryptError::Config(
            "--qps must be a number >= 0 (0: no client-side limit)".into(),
        ));
    }
    rewrite::qps_interval(options.qps)?;
    if options.timeout.is_zero() {
        return Err(ReencryptError::Config(
            "--timeout must be longer than 0 (e.g. 30m)".into(),
        ));
    }
    if options.page_size == 0 || options.page_size > 10_000 {
        return Err(ReencryptError::Config(
            "--page-size must be between 1 and 10000".into(),
        ));
    }
    if let Some(ns) = &options.namespace
        && (ns.is_empty() || ns.contains('/'))
    {
        return Err(ReencryptError::Config(format!(
            "--namespace {ns:?} is not a namespace name"
        )));
    }
    if options.use_storage_version_migration {
        if options.namespace.is_some() {
            return Err(ReencryptError::Config(
                "--use-storage-version-migration rewrites whole resources: it takes no --namespace"
                    .into(),
            ));
        }
        if options.force_rewrite {
            return Err(ReencryptError::Config(
                "--force-rewrite rewrites from the client: it does not go with \
                 --use-storage-version-migration"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Runs `reencrypt` to the end, to a stop request, or to an error.
pub async fn run(options: &Options, stop: &StopFlag) -> Result<Summary, ReencryptError> {
    validate(options)?;
    let cluster = cluster::connect(options).await?;
    let client = cluster.client.clone();
    if options.use_storage_version_migration {
        return svm::run(&client, options, stop).await;
    }
    let resolved = resources::resolve(&client, &options.resources).await?;
    let file = match (&options.state_file, options.dry_run) {
        (Some(p), false) => StateFile::at(p.clone()),
        _ => StateFile::none(),
    };
    let fresh = State::new(
        cluster.target(options.expect_key_id.as_deref()).await,
        options.namespace.as_deref(),
        &options.resources,
    );
    let mut state = match file.load(&fresh, options.discard_state)? {
        Some(s) => s,
        None => fresh,
    };
    let mut summary = Summary {
        dry_run: options.dry_run,
        state_file: file.path().map(|p| p.display().to_string()),
        ..Default::default()
    };
    let mut progress = Progress::new(options.progress);
    let limiter = Arc::new(RateLimiter::new(options.qps)?);
    for r in &resolved {
        let mut job = ResourceRun {
            client: &client,
            options,
            resource: r,
            state: &mut state,
            file: &file,
            progress: &mut progress,
            stop,
            limiter: limiter.clone(),
            relists: 0,
        };
        let result = job.run().await;
        let relists = job.relists;
        let cursor = state.cursor_mut(&r.name).clone();
        summary.total.add(&cursor.counts);
        for (object, reason) in &cursor.failed {
            summary.add_failure(&r.name, object, reason.clone());
        }
        summary.resources.push(ResourceSummary {
            resource: r.name.clone(),
            counts: cursor.counts,
            done: cursor.done,
            relists,
            migration: None,
            cluster_scoped: !r.namespaced,
        });
        match result {
            Ok(true) => {}
            Ok(false) => {
                summary.interrupted = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if !summary.interrupted && summary.failures.is_empty() {
        file.remove()?;
        summary.state_file = None;
    }
    // Failed objects keep the state file (saved with them): the next run retries them first.
    summary.nothing_rewritten = !options.dry_run
        && !options.force_rewrite
        && summary.total.rewritten == 0
        && summary.total.already_current > 0;
    Ok(summary)
}

struct ResourceRun<'a> {
    client: &'a Client,
    options: &'a Options,
    resource: &'a Resolved,
    state: &'a mut State,
    file: &'a StateFile,
    progress: &'a mut Progress,
    stop: &'a StopFlag,
    limiter: Arc<RateLimiter>,
    relists: u64,
}

/// A listed object: where to find it and its place in list order.
struct Listed {
    namespace: Option<String>,
    name: String,
    /// `namespace/name` (namespaced) or `name`: the apiserver lists in this byte order.
    key: String,
}

impl ResourceRun<'_> {
    /// True when the resource is done, false when a stop was asked for.
    async fn run(&mut self) -> Result<bool, ReencryptError> {
        let name = self.resource.name.clone();
        let mut cursor = self.state.cursor_mut(&name).clone();
        let urls = ResourceUrls::new(
            &self.resource.api,
            self.resource.namespaced,
            self.options.namespace.as_deref(),
        );
        let rewriter = Rewriter {
            client: self.client.clone(),
            urls: urls.clone(),
            limiter: self.limiter.clone(),
            force: self.options.force_rewrite,
        };
        if !cursor.failed.is_empty() && !self.options.dry_run {
            self.retry_failed(&rewriter, &mut cursor).await?;
        }
        if cursor.done {
            self.progress
                .note(&format!("{name}: already done according to the state file"));
            return Ok(!self.stop.is_stopped());
        }
        self.progress.start(&name, cursor.position);
        let mut token = cursor.continue_token.clone();
        let mut last_save = Instant::now();
        loop {
            if self.stop.is_stopped() {
                self.save(&cursor)?;
                self.progress
                    .finish(&name, cursor.position, &cursor.counts, false);
                return Ok(false);
            }
            let page_size = self.options.page_size;
            let page = match rewriter
                .send::<MetaPage>(|| urls.list_page(page_size, token.as_deref()))
                .await
            {
                Ok(p) => p,
                Err(e) if e.code == 410 || (e.code == 400 && token.is_some()) => {
                    // Expired (or, from an old state file, unusable) continue token: list again
                    // from where we were. The 410 carries a token that continues at the next key
                    // on the latest snapshot; without one, list from the start and skip what is
                    // done (last_key).
                    self.relists += 1;
                    if self.relists > MAX_RELISTS {
                        self.save(&cursor)?;
                        return Err(ReencryptError::Unavailable(format!(
                            "listing {name}: continue tokens keep expiring ({e}); try a smaller \
                             --page-size or a higher --qps"
                        )));
                    }
                    token = e.continue_token.clone();
                    self.progress.note(&format!(
                        "{name}: continue token no longer valid ({}); listing again after {}",
                        e.code,
                        cursor.last_key.as_deref().unwrap_or("the start")
                    ));
                    continue;
                }
                Err(e) if e.is_denied() => {
                    self.save(&cursor)?;
                    return Err(denied(&name, "list", &e.to_string()));
                }
                Err(e) => {
                    self.save(&cursor)?;
                    return Err(ReencryptError::Unavailable(format!(
                        "listing {name} failed: {e}"
                    )));
                }
            };
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            let remaining = page.metadata.remaining_item_count.map(|r| r.max(0) as u64);
            let items: Vec<Listed> = page
                .items
                .into_iter()
                .filter_map(|i| {
                    let name = i.metadata.name?;
                    let namespace = i.metadata.namespace.filter(|n| !n.is_empty());
                    let key = match &namespace {
                        Some(ns) => format!("{ns}/{name}"),
                        None => name.clone(),
                    };
                    Some(Listed {
                        namespace,
                        name,
                        key,
                    })
                })
                .filter(|l| {
                    cursor
                        .last_key
                        .as_deref()
                        .is_none_or(|k| l.key.as_str() > k)
                })
                .collect();
            let total = match (remaining, &next) {
                (Some(r), _) => Some(cursor.position + items.len() as u64 + r),
                (None, None) => Some(cursor.position + items.len() as u64),
                (None, Some(_)) => None,
            };
            cursor.continue_token = token.clone();
            let fatal = if self.options.dry_run {
                for l in &items {
                    cursor.counts.processed += 1;
                    cursor.position += 1;
                    cursor.last_key = Some(l.key.clone());
                }
                self.progress
                    .update(&name, cursor.position, total, &cursor.counts);
                None
            } else {
                self.rewrite_page(&rewriter, items, &mut cursor, total, &mut last_save)
                    .await?
            };
            if let Some(e) = fatal {
                self.save(&cursor)?;
                self.progress
                    .finish(&name, cursor.position, &cursor.counts, false);
                return Err(e);
            }
            if self.stop.is_stopped() {
                continue; // saved and reported at the top of the loop
            }
            match next {
                Some(n) => {
                    token = Some(n);
                    cursor.continue_token = token.clone();
                    // Any later save pairs this token with a last_key from this page or after,
                    // and the file holds a consistent older pair until then (the token the page
                    // was listed with and a key on it); stops and errors save at once.
                    if last_save.elapsed() >= SAVE_EVERY {
                        self.save(&cursor)?;
                        last_save = Instant::now();
                    }
                }
                None => break,
            }
        }
        cursor.done = true;
        cursor.continue_token = None;
        self.save(&cursor)?;
        self.progress
            .finish(&name, cursor.position, &cursor.counts, true);
        Ok(true)
    }

    /// Rewrites the objects of one page in list order with `--concurrency` in flight; a stop or
    /// an RBAC denial lets the objects in flight finish and starts no more.
    async fn rewrite_page(
        &mut self,
        rewriter: &Rewriter,
        items: Vec<Listed>,
        cursor: &mut Cursor,
        total: Option<u64>,
        last_save: &mut Instant,
    ) -> Result<Option<ReencryptError>, ReencryptError> {
        let name = self.resource.name.clone();
        let halt = AtomicBool::new(false);
        let stop = self.stop;
        // Objects finish out of order (a conflict backoff or a Retry-After must not hold up the
        // other workers), but the state only moves past an object once everything before it in
        // list order is done: `slots` holds outcomes until then.
        let mut slots: Vec<Option<Outcome>> = vec![None; items.len()];
        let keys: Vec<String> = items.iter().map(|l| l.key.clone()).collect();
        let mut next = 0;
        let results =
            futures::stream::iter(items.into_iter().enumerate())
                .take_while(|_| {
                    futures::future::ready(!stop.is_stopped() && !halt.load(Ordering::SeqCst))
                })
                .map(|(i, l)| async move {
                    (i, rewriter.rewrite(l.namespace.as_deref(), &l.name).await)
                })
                .buffer_unordered(self.options.concurrency);
        futures::pin_mut!(results);
        let mut fatal = None;
        while let Some((i, outcome)) = results.next().await {
            match outcome {
                Ok(o) => slots[i] = Some(o),
                Err(d) => {
                    halt.store(true, Ordering::SeqCst);
                    if fatal.is_none() {
                        fatal = Some(denied(&name, d.verb, &d.error.to_string()));
                    }
                    continue;
                }
            }
            while let Some(outcome) = slots.get_mut(next).and_then(Option::take) {
                cursor.counts.processed += 1;
                match outcome {
                    Outcome::Rewritten => cursor.counts.rewritten += 1,
                    Outcome::AlreadyCurrent => cursor.counts.already_current += 1,
                    Outcome::Skipped => cursor.counts.skipped += 1,
                    Outcome::Failed(reason) => {
                        cursor.counts.failed += 1;
                        cursor.failed.insert(keys[next].clone(), reason);
                    }
                }
                cursor.position += 1;
                cursor.last_key = Some(keys[next].clone());
                next += 1;
            }
            self.progress
                .update(&name, cursor.position, total, &cursor.counts);
            if last_save.elapsed() >= SAVE_EVERY {
                self.save(cursor)?;
                *last_save = Instant::now();
            }
        }
        Ok(fatal)
    }

    /// Retries, before anything else, the objects an earlier run gave up on: the cursor is past
    /// them, so they stay recorded until they are rewritten (or found deleted).
    async fn retry_failed(
        &mut self,
        rewriter: &Rewriter,
        cursor: &mut Cursor,
    ) -> Result<(), ReencryptError> {
        let name = self.resource.name.clone();
        self.progress.note(&format!(
            "{name}: retrying {} object(s) that failed before",
            cursor.failed.len()
        ));
        let namespaced = self.resource.namespaced;
        let stop = self.stop;
        let keys: Vec<String> = cursor.failed.keys().cloned().collect();
        let results: Vec<_> = futures::stream::iter(keys)
            .take_while(|_| futures::future::ready(!stop.is_stopped()))
            .map(|key| async move {
                let outcome = match key.split_once('/') {
                    Some((ns, object)) if namespaced => rewriter.rewrite(Some(ns), object).await,
                    _ => rewriter.rewrite(None, &key).await,
                };
                (key, outcome)
            })
            .buffer_unordered(self.options.concurrency)
            .collect()
            .await;
        let mut fatal = None;
        for (key, outcome) in results {
            let counts = &mut cursor.counts;
            match outcome {
                Ok(Outcome::Failed(reason)) => {
                    cursor.failed.insert(key, reason);
                    continue;
                }
                Ok(Outcome::Rewritten) => counts.rewritten += 1,
                Ok(Outcome::AlreadyCurrent) => counts.already_current += 1,
                Ok(Outcome::Skipped) => counts.skipped += 1,
                Err(d) => {
                    fatal.get_or_insert_with(|| denied(&name, d.verb, &d.error.to_string()));
                    continue;
                }
            }
            counts.failed = counts.failed.saturating_sub(1);
            cursor.failed.remove(&key);
        }
        self.save(cursor)?;
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn save(&mut self, cursor: &Cursor) -> Result<(), ReencryptError> {
        *self.state.cursor_mut(&self.resource.name) = cursor.clone();
        self.file.save(self.state)
    }
}

fn denied(resource: &str, verb: &str, why: &str) -> ReencryptError {
    ReencryptError::Denied {
        resource: resource.to_string(),
        verb: verb.to_string(),
        message: format!(
            "the API server refused to {verb} {resource} ({why}): RBAC must allow the verbs \
             list, get and update on {resource} for this identity (see \
             deploy/rbac/reencrypt-clusterrole.yaml); progress is kept in the state file"
        ),
    }
}
