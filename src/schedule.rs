//! Runs every configured check in the background, each on its own interval with jitter, under a
//! bound on concurrent checks. Scrapes never trigger network I/O: they read what the last runs
//! published in [`State`].
//!
//! A configuration (re)load starts a new *generation*: everything needed to run it (TLS trust
//! stores from `ca_file`s) is prepared first, so a reload that cannot run is refused before
//! anything stops; then the old generation is cancelled and the new one spawned. Counters survive
//! because [`State::reconcile_checks`] keeps the records of checks that are still configured.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::oauth::{TokenSource, TokenStore, Tokens};
use crate::probe::tls::TlsClient;
use crate::probe::{Outcome, Protocol};
use crate::state::{CheckKey, State};

/// What a configuration needs at run time, built before it replaces the running one.
#[derive(Clone, Debug)]
pub struct Plan {
    /// One TLS client per distinct trust setting (`None` = built-in roots).
    pub tls: HashMap<Option<PathBuf>, TlsClient>,
}

impl Plan {
    /// Build the TLS clients for every `ca_file` in `cfg`; an unreadable or empty CA file refuses
    /// the configuration.
    pub fn prepare(cfg: &Config) -> Result<Plan, String> {
        let mut files: Vec<Option<PathBuf>> = vec![None];
        files.extend(cfg.endpoints.iter().map(|e| e.ca_file.clone()));
        for m in &cfg.mailboxes {
            files.extend([
                m.imap.ca_file.clone(),
                m.pop3.ca_file.clone(),
                m.smtp.ca_file.clone(),
            ]);
        }
        let mut tls = HashMap::new();
        let mut problems = Vec::new();
        for f in files {
            if tls.contains_key(&f) {
                continue;
            }
            match TlsClient::new(f.as_deref()) {
                Ok(c) => {
                    tls.insert(f, c);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            Ok(Plan { tls })
        } else {
            Err(problems.join("\n"))
        }
    }

    pub fn tls_for(&self, ca_file: &Option<PathBuf>) -> Option<&TlsClient> {
        self.tls.get(ca_file)
    }
}

struct Generation {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Owns the running generation of check tasks, and the token sources (which outlive a
/// generation when their credential is unchanged, so a reload costs no token request).
pub struct Scheduler {
    state: Arc<State>,
    current: Mutex<Option<Generation>>,
    tokens: Mutex<Tokens>,
    tokens_cancel: CancellationToken,
    graph: crate::graph::Runner,
}

impl Scheduler {
    pub fn new(state: Arc<State>) -> Scheduler {
        let tokens_cancel = CancellationToken::new();
        Scheduler {
            tokens: Mutex::new(Tokens::new(state.clone(), tokens_cancel.clone())),
            graph: crate::graph::Runner::new(state.clone()),
            state,
            current: Mutex::new(None),
            tokens_cancel,
        }
    }

    /// Replace the running generation with one for `cfg`.
    pub fn start(&self, cfg: Arc<Config>, plan: Plan) {
        let keys = check_keys(&cfg);
        self.state.reconcile_checks(&keys);
        let store = Arc::new(TokenStore::new(&cfg.state_dir));
        let sources: HashMap<String, Arc<TokenSource>> = {
            let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            for (name, err) in tokens.reconcile(&cfg.credentials, &store) {
                tracing::error!(credential = %name, error = %err, "cannot set up the token source");
            }
            cfg.credentials
                .iter()
                .filter_map(|c| tokens.get(&c.name).map(|s| (c.name.clone(), s)))
                .collect()
        };
        let gen = Generation {
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let sem = Arc::new(Semaphore::new(cfg.defaults.max_concurrent_checks));
        let mut jobs = Vec::with_capacity(keys.len());
        for (i, ep) in cfg.endpoints.iter().enumerate() {
            let Some(tls) = plan.tls_for(&ep.ca_file).cloned() else {
                continue;
            };
            jobs.push(Job {
                key: CheckKey::Endpoint(ep.name.clone()),
                interval: ep.interval,
                target: Target::Endpoint { index: i, tls },
            });
        }
        for (i, m) in cfg.mailboxes.iter().enumerate() {
            for p in &m.protocols {
                let Some(tls) = plan.tls_for(&m.server(*p).ca_file).cloned() else {
                    continue;
                };
                jobs.push(Job {
                    key: CheckKey::Login {
                        mailbox: m.name.clone(),
                        protocol: *p,
                    },
                    interval: m.interval,
                    target: Target::Login {
                        index: i,
                        protocol: *p,
                        tls,
                        source: sources.get(&m.credential).cloned(),
                    },
                });
            }
        }
        let queue = Queue {
            jitter: cfg.defaults.jitter,
            state: self.state.clone(),
            sem: sem.clone(),
            cancel: gen.cancel.clone(),
            tasks: gen.tasks.clone(),
        };
        // Every job reads its endpoint or mailbox from the shared configuration (no copy per job).
        let shared = cfg.clone();
        gen.tasks.spawn(queue.run(jobs, move |target: &Target| {
            let cfg = shared.clone();
            let target = target.clone();
            async move {
                match target {
                    // the indexes come from enumerating this very configuration (invariant)
                    Target::Endpoint { index, tls } => {
                        crate::probe::endpoint::probe(&cfg.endpoints[index], &tls).await
                    }
                    Target::Login {
                        index,
                        protocol,
                        tls,
                        source,
                    } => login_check(&cfg.mailboxes[index], protocol, tls, source).await,
                }
            }
        }));
        self.graph.start(&cfg, &gen.tasks, &gen.cancel, &sem);
        gen.tasks.close();
        let old = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(gen);
        if let Some(old) = old {
            old.cancel.cancel();
        }
    }

    /// Cancel the running generation and the token sources, and wait (bounded) for the checks.
    pub async fn shutdown(&self, grace: Duration) {
        self.tokens_cancel.cancel();
        let gen = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(g) = gen {
            g.cancel.cancel();
            let _ = tokio::time::timeout(grace, g.tasks.wait()).await;
        }
    }
}

/// One login: the credential's current access token (cached, or fetched once if none), then
/// the protocol dialogue. Without a usable token the dialogue still measures the connection
/// and fails in `auth` with `token_unavailable`.
pub async fn login_check(
    mailbox: &crate::config::Mailbox,
    protocol: Protocol,
    tls: TlsClient,
    source: Option<Arc<TokenSource>>,
) -> Outcome {
    let token = match &source {
        Some(s) => s.access_token().await.map_err(|e| e.to_string()),
        None => Err(format!(
            "credential {} could not be set up (see the token line)",
            mailbox.credential
        )),
    };
    let secret = token.as_ref().map(|t| &t.secret).map_err(Clone::clone);
    crate::probe::login::probe(mailbox, protocol, &tls, secret).await
}

/// Every check a configuration defines, in display order.
pub fn check_keys(cfg: &Config) -> Vec<CheckKey> {
    let mut keys: Vec<CheckKey> = cfg
        .endpoints
        .iter()
        .map(|e| CheckKey::Endpoint(e.name.clone()))
        .collect();
    for m in &cfg.mailboxes {
        for p in &m.protocols {
            keys.push(CheckKey::Login {
                mailbox: m.name.clone(),
                protocol: *p,
            });
        }
    }
    keys
}

/// A random duration in `[0, max]`.
pub fn random_upto(max: Duration) -> Duration {
    let ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// What one job checks: an index into the generation's configuration and what the run needs.
#[derive(Clone)]
enum Target {
    Endpoint {
        index: usize,
        tls: TlsClient,
    },
    Login {
        index: usize,
        protocol: Protocol,
        tls: TlsClient,
        source: Option<Arc<TokenSource>>,
    },
}

/// One scheduled check: what it publishes under, how often, and what the run function needs.
pub struct Job<T> {
    pub key: CheckKey,
    pub interval: Duration,
    pub target: T,
}

/// The timer queue of one generation: when each of its checks is due next, and the few runs in
/// flight.
///
/// One task holds every job's due time in a binary heap and spawns a task per *run* only, once
/// the run has a concurrency permit. An idle check is an entry in the heap (a few dozen bytes)
/// instead of a parked task with its own timer (~1 kB each, 3,000 of them at 1,000 mailboxes).
/// The behaviour is that of a loop per check: first run after a random part of `jitter`, then
/// every `interval` plus a random part of `jitter` counted from the run's start, or later when
/// the outcome asks to back off (Exchange's "Suggested Backoff Time"); one run at a time per
/// check (a mailbox never has two SMTP probes open); runs wait for a permit in the order they
/// fell due.
pub struct Queue {
    pub jitter: Duration,
    pub state: Arc<State>,
    /// Shared with the Graph checks: `max_concurrent_checks` bounds all of them together.
    pub sem: Arc<Semaphore>,
    pub cancel: CancellationToken,
    /// Where runs are spawned, so shutdown waits for them.
    pub tasks: TaskTracker,
}

type Acquire = Pin<
    Box<
        dyn Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send
            + 'static,
    >,
>;

impl Queue {
    /// Run `jobs` until cancelled; `check` builds the future of one run of a job's target.
    pub async fn run<T, F, Fut>(self, jobs: Vec<Job<T>>, check: F)
    where
        T: Send + Sync + 'static,
        F: Fn(&T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let jobs: Arc<[Job<T>]> = jobs.into();
        let check = Arc::new(check);
        let start = Instant::now();
        // Due times; equal instants run in job order (the index breaks the tie).
        let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| Reverse((start + random_upto(self.jitter.min(j.interval)), i)))
            .collect();
        // Due, waiting for a permit, in the order they fell due.
        let mut ready: VecDeque<(usize, Instant)> = VecDeque::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
        let mut acquire: Option<Acquire> = None;
        let sleep = tokio::time::sleep_until(start);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            while let Some(&Reverse((due, i))) = heap.peek() {
                if due > now {
                    sleep.as_mut().reset(due);
                    break;
                }
                heap.pop();
                ready.push_back((i, due));
            }
            if acquire.is_none() && !ready.is_empty() {
                // Kept across loop turns, so the queue keeps its place in the semaphore's
                // (fair) queue against the Graph checks.
                acquire = Some(Box::pin(self.sem.clone().acquire_owned()));
            }
            let waiting = acquire.is_some();
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                Some((i, next)) = done_rx.recv() => heap.push(Reverse((next, i))),
                permit = async {
                    match acquire.as_mut() {
                        Some(a) => a.await,
                        None => std::future::pending().await,
                    }
                }, if waiting => {
                    acquire = None;
                    let Ok(permit) = permit else { return };
                    let Some((i, due)) = ready.pop_front() else { continue };
                    let run = Run {
                        jobs: jobs.clone(),
                        index: i,
                        due,
                        started: Instant::now(),
                        jitter: self.jitter,
                        state: self.state.clone(),
                        cancel: self.cancel.clone(),
                        done: done_tx.clone(),
                    };
                    let fut = check(&jobs[i].target);
                    self.tasks.spawn(run.run(permit, fut));
                }
                _ = &mut sleep, if !heap.is_empty() => {}
            }
        }
    }
}

/// One run of one job, spawned with its permit.
struct Run<T> {
    jobs: Arc<[Job<T>]>,
    index: usize,
    due: Instant,
    started: Instant,
    jitter: Duration,
    state: Arc<State>,
    cancel: CancellationToken,
    done: mpsc::UnboundedSender<(usize, Instant)>,
}

impl<T> Run<T> {
    async fn run(self, permit: OwnedSemaphorePermit, check: impl Future<Output = Outcome>) {
        // `index` was taken from enumerating `jobs` (invariant)
        let job = &self.jobs[self.index];
        // How late this run starts against its schedule: timer lateness plus the wait for a
        // concurrency permit. Logged (not a metric) so a too-low max_concurrent_checks for the
        // number of checks shows up; docs/benchmarks.md reads it.
        let slip = self.started.saturating_duration_since(self.due);
        let outcome = tokio::select! {
            _ = self.cancel.cancelled() => return,
            o = check => o,
        };
        drop(permit);
        // The interval counts from when the run really started, after waiting for a permit: at
        // start-up every check is due within `jitter` and they queue (3,000 logins at 16 at a
        // time take a while), and counting from the due time would keep them bunched and queuing
        // every cycle; counted from the start, the next cycle arrives spread out as this one ran.
        let mut wait = job.interval + random_upto(self.jitter);
        if let Some(b) = outcome.backoff {
            wait = wait.max(b);
        }
        let next = self.started + wait;
        let next_wall = SystemTime::now() + next.saturating_duration_since(Instant::now());
        let slip_ms = slip.as_millis() as u64;
        if outcome.success {
            tracing::debug!(check = %job.key.id(), duration_ms = outcome.duration.as_millis() as u64, slip_ms, "check ok");
        } else {
            tracing::info!(
                check = %job.key.id(),
                reason = outcome.reason.as_str(),
                phase = outcome.failed_phase.map(|p| p.as_str()).unwrap_or("-"),
                detail = %outcome.detail,
                slip_ms,
                "check failed"
            );
        }
        self.state.publish(&job.key, outcome, Some(next_wall));
        // The queue is gone only when the generation is cancelled; nothing to reschedule then.
        let _ = self.done.send((self.index, next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn queue(state: &Arc<State>, permits: usize, jitter: Duration) -> (Queue, CancellationToken) {
        let cancel = CancellationToken::new();
        let q = Queue {
            jitter,
            state: state.clone(),
            sem: Arc::new(Semaphore::new(permits)),
            cancel: cancel.clone(),
            tasks: TaskTracker::new(),
        };
        (q, cancel)
    }

    fn jobs(keys: &[CheckKey], interval: Duration) -> Vec<Job<()>> {
        keys.iter()
            .map(|k| Job {
                key: k.clone(),
                interval,
                target: (),
            })
            .collect()
    }

    /// A run that had to wait for a concurrency permit counts its interval from when it really
    /// started, so checks queued at start-up do not stay bunched (and queue again) every cycle.
    #[tokio::test(start_paused = true)]
    async fn interval_counts_from_the_start_after_the_permit() {
        let state = Arc::new(State::new());
        let keys = [
            CheckKey::Endpoint("a".into()),
            CheckKey::Endpoint("b".into()),
        ];
        state.reconcile_checks(&keys);
        let (q, cancel) = queue(&state, 1, Duration::ZERO);
        tokio::spawn(q.run(jobs(&keys, Duration::from_secs(60)), |_: &()| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Outcome::pending()
        }));
        // Both due at 0; one runs 0-10 s, the other waits and runs 10-20 s. The paused clock
        // does not move SystemTime, so `next_run` (wall time) reads as "publish time + the wait
        // left": 60 s from the run's start, less the 10 s it ran, for the queued one too (counted
        // from its due time it would be 40 s).
        tokio::time::sleep(Duration::from_secs(25)).await;
        let now = SystemTime::now();
        let ahead: Vec<u64> = keys
            .iter()
            .map(|k| {
                let next = state.check(k).and_then(|r| r.next_run).expect("scheduled");
                next.duration_since(now)
                    .map_or(0, |d| d.as_secs_f64().round() as u64)
            })
            .collect();
        assert_eq!(ahead, vec![50, 50]);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_on_interval_and_honours_backoff() {
        let state = Arc::new(State::new());
        let key = CheckKey::Endpoint("x".into());
        state.reconcile_checks(std::slice::from_ref(&key));
        let runs = Arc::new(AtomicU32::new(0));
        let (q, cancel) = queue(&state, 1, Duration::ZERO);
        let r = runs.clone();
        let task = tokio::spawn(q.run(
            jobs(std::slice::from_ref(&key), Duration::from_secs(60)),
            move |_: &()| {
                let n = r.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut o = Outcome::pending();
                    o.reason = crate::probe::Reason::Throttled;
                    if n == 1 {
                        o.backoff = Some(Duration::from_secs(300));
                    }
                    o
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // the second run asked for 300 s: nothing at +60 s, the third run at +300 s
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(state.check(&key).map(|r| r.runs), Some(3));
        cancel.cancel();
        task.await.unwrap();
    }

    /// Many checks on one queue: never more runs at once than permits, never two runs of one
    /// check at once, each check runs once per interval (with jitter spreading the first runs),
    /// and cancelling stops the queue and the runs in flight.
    #[tokio::test(start_paused = true)]
    async fn bounded_concurrency_one_run_per_check_and_cancel() {
        let state = Arc::new(State::new());
        let keys: Vec<CheckKey> = (0..50)
            .map(|i| CheckKey::Endpoint(format!("e{i}")))
            .collect();
        state.reconcile_checks(&keys);
        let (q, cancel) = queue(&state, 4, Duration::from_secs(5));
        let tasks = q.tasks.clone();
        let in_flight = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let per_check: Arc<Vec<AtomicU32>> = Arc::new((0..50).map(|_| AtomicU32::new(0)).collect());
        let jobs: Vec<Job<usize>> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Job {
                key: k.clone(),
                interval: Duration::from_secs(60),
                target: i,
            })
            .collect();
        let (f, m, pc) = (in_flight.clone(), most.clone(), per_check.clone());
        tasks.spawn(q.run(jobs, move |i: &usize| {
            let (f, m, pc, i) = (f.clone(), m.clone(), pc.clone(), *i);
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                assert_eq!(
                    pc[i].fetch_add(1, Ordering::SeqCst),
                    0,
                    "two runs of one check"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                pc[i].fetch_sub(1, Ordering::SeqCst);
                f.fetch_sub(1, Ordering::SeqCst);
                Outcome::pending()
            }
        }));
        tasks.close();
        // 50 runs of 0.5 s at 4 at a time: ~6.5 s, within the first interval
        tokio::time::sleep(Duration::from_secs(30)).await;
        let runs = |s: &State| {
            keys.iter()
                .map(|k| s.check(k).map_or(0, |r| r.runs))
                .collect::<Vec<_>>()
        };
        assert_eq!(runs(&state), vec![1; 50]);
        assert_eq!(most.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(runs(&state), vec![2; 50]);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(1), tasks.wait())
            .await
            .expect("the queue and its runs stop when cancelled");
        assert_eq!(in_flight.load(Ordering::SeqCst), 0);
    }
}
