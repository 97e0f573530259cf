//! Duplicate suppression: identical non-streaming requests of one user that arrive while the
//! first is in flight, or within `routing.dedup_window` of its answer, share one upstream call.
//!
//! The first request (the leader) runs as usual; the others (followers) wait for its whole
//! answer and get the same status, headers and bytes plus `x-corral-shared: 1`. Successful
//! answers are kept for the window; failures reach the followers already waiting but are never
//! kept. A leader whose client goes away removes its entry, and its followers run again.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Memory for kept answers (bodies plus an allowance per entry); past it an answer reaches
/// the followers already waiting only. At 35k distinct requests/s this holds the last
/// ~0.3 s of answers; a bigger table cost throughput (cache misses) and 200+ MiB of RSS.
const MAX_KEPT_BYTES: usize = 16 << 20;
/// Allowance per kept answer for its key, header map, map slot and queue slot (about what
/// they take, measured), so that many tiny answers are bounded too.
const ENTRY_BYTES: usize = 2048;

/// SHA-256 over who asked, the path, the headers that change the upstream call, and the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

/// Keys are SHA-256 digests already: their first eight bytes are a good hash as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

/// The tokens a whole answer cost, set on the response by the handler that made it so that
/// followers are logged with them.
#[derive(Debug, Clone, Copy)]
pub struct Spent(pub u64, pub u64);

/// The error message of a failed answer, set on the response for the same reason.
#[derive(Debug, Clone)]
pub struct Failed(pub String);

/// One whole answer as its client received it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Content type, `x-corral-*`, `retry-after`: what the handler set.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub tokens: Option<(u64, u64)>,
    /// The leader's error message, for the followers' request-log rows.
    pub error: Option<String>,
}

/// How a follower got its answer (the `how` label of `corral_dedup_shared_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// It waited for a leader still running.
    Inflight,
    /// A kept answer younger than the window.
    Recent,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Inflight => "inflight",
            How::Recent => "recent",
        }
    }
}

type Slot = watch::Receiver<Option<Arc<Answer>>>;
type Publisher = watch::Sender<Option<Arc<Answer>>>;

enum Entry {
    /// A leader is running. Its answer goes out on the channel that the first follower
    /// made: a request without duplicates (nearly all of them) never makes one.
    Running(Option<Publisher>),
    /// A successful answer and when it was published.
    Done(Instant, Arc<Answer>),
}

#[derive(Default)]
struct Table {
    entries: HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    /// Kept answers in the order they were published, which is the order they expire in.
    kept: VecDeque<(Instant, Key)>,
    kept_bytes: usize,
}

fn cost(a: &Answer) -> usize {
    a.body.len() + ENTRY_BYTES
}

impl Table {
    /// Removes the entry of `key`, whatever it holds.
    fn forget(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            self.dispose(old);
        }
    }

    /// Accounts for an entry taken out of the map: a kept answer frees its bytes, a
    /// running one hands back its followers' channel, if any came.
    fn dispose(&mut self, old: Entry) -> Option<Publisher> {
        match old {
            Entry::Running(followers) => followers,
            Entry::Done(_, a) => {
                self.kept_bytes -= cost(&a);
                None
            }
        }
    }

    /// Drops the answers older than `window`, oldest first: amortised O(1) per request,
    /// whatever the map holds. Running entries are never touched.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, key)) = self.kept.front() {
            if now.duration_since(at) < window {
                break;
            }
            self.kept.pop_front();
            // The key may since have been forgotten or be running again.
            if matches!(self.entries.get(&key), Some(Entry::Done(t, _)) if *t == at) {
                self.forget(&key);
            }
        }
    }
}

/// What a request is to do, decided under the lock.
pub enum Turn<'a> {
    /// Run the request and publish its answer through the leader.
    Lead(Leader<'a>),
    /// Wait for the leader already running.
    Wait(Slot),
    /// Answer at once with a kept answer.
    Recent(Arc<Answer>),
}

/// Shared by every worker of one gateway.
pub struct Dedup {
    window: Duration,
    table: Mutex<Table>,
}

impl Dedup {
    /// `window` zero turns sharing off.
    pub fn new(window: Duration) -> Dedup {
        Dedup {
            window,
            table: Mutex::new(Table::default()),
        }
    }

    /// The key of a request whose whole answer may be shared; `None` when sharing is off.
    pub fn key(&self, user: &str, body: &[u8], req: &HttpRequest) -> Option<Key> {
        if self.window.is_zero() {
            return None;
        }
        let header = |name| req.headers().get(name).map_or(&b""[..], |v| v.as_bytes());
        let mut h = Sha256::new();
        for part in [
            user.as_bytes(),
            req.path().as_bytes(),
            // Sent on to Anthropic upstreams, where they change the answer.
            header(HeaderName::from_static("anthropic-version")),
            header(HeaderName::from_static("anthropic-beta")),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(body);
        Some(Key(h.finalize().into()))
    }

    /// Leads, waits or answers from the table, in one short lock and one map lookup.
    pub fn turn(&self, key: Key) -> Turn<'_> {
        let now = Instant::now();
        let mut t = self.table.lock();
        t.expire(now, self.window);
        let t = &mut *t;
        match t.entries.entry(key) {
            MapEntry::Occupied(mut e) => match e.get_mut() {
                Entry::Running(Some(tx)) => return Turn::Wait(tx.subscribe()),
                Entry::Running(none) => {
                    let (tx, slot) = watch::channel(None);
                    *none = Some(tx);
                    return Turn::Wait(slot);
                }
                Entry::Done(at, a) if now.duration_since(*at) < self.window => {
                    return Turn::Recent(a.clone());
                }
                Entry::Done(_, a) => {
                    t.kept_bytes -= cost(a);
                    e.insert(Entry::Running(None));
                }
            },
            MapEntry::Vacant(e) => {
                e.insert(Entry::Running(None));
            }
        }
        Turn::Lead(Leader {
            dedup: self,
            key,
            answer: None,
        })
    }

    /// Entries in the table (running and kept), for tests and the curious.
    pub fn len(&self) -> usize {
        self.table.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Called once per leader, when it is dropped: keep a successful answer, remove the
    /// rest. Returns the channel its followers wait on, if any came.
    fn settle(&self, key: &Key, answer: Option<&Arc<Answer>>) -> Option<Publisher> {
        let now = Instant::now();
        let mut t = self.table.lock();
        t.expire(now, self.window);
        let keep =
            answer.filter(|a| a.status.is_success() && t.kept_bytes + cost(a) <= MAX_KEPT_BYTES);
        // Only this leader replaces or removes its running entry, so the entry is its own.
        let old = match keep {
            Some(a) => {
                t.kept_bytes += cost(a);
                t.kept.push_back((now, *key));
                t.entries.insert(*key, Entry::Done(now, a.clone()))
            }
            None => t.entries.remove(key),
        };
        old.and_then(|old| t.dispose(old))
    }
}

/// The request that runs for its duplicates. Dropped without an answer (its client went
/// away), it removes its entry and wakes its followers, who then run again.
pub struct Leader<'a> {
    dedup: &'a Dedup,
    key: Key,
    answer: Option<Arc<Answer>>,
}

impl Leader<'_> {
    /// Hands `answer` to the followers waiting now, and keeps it for later ones when it is a
    /// success.
    pub fn publish(mut self, answer: Answer) {
        self.answer = Some(Arc::new(answer));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let followers = self.dedup.settle(&self.key, self.answer.as_ref());
        if let (Some(tx), Some(a)) = (&followers, self.answer.take()) {
            tx.send_replace(Some(a));
        }
        // Without an answer the channel closes here, which wakes every follower.
    }
}

/// The leader's answer, or `None` when the leader went away without one.
pub async fn wait(mut slot: Slot) -> Option<Arc<Answer>> {
    let answer = slot.wait_for(Option::is_some).await.ok()?;
    answer.clone()
}

/// Splits a whole response into the response for the leader's client and the shareable
/// answer; a streamed body is not shareable.
pub fn capture(resp: HttpResponse) -> (HttpResponse, Option<Answer>) {
    let tokens = resp.extensions().get::<Spent>().map(|s| (s.0, s.1));
    let error = resp.extensions().get::<Failed>().map(|f| f.0.clone());
    let (head, body) = resp.into_parts();
    match body.try_into_bytes() {
        Ok(bytes) => {
            let answer = Answer {
                status: head.status(),
                headers: head.headers().clone(),
                body: bytes.clone(),
                tokens,
                error,
            };
            (head.set_body(bytes).map_into_boxed_body(), Some(answer))
        }
        Err(body) => (head.set_body(body), None),
    }
}

/// A follower's response: the leader's status, headers and bytes, marked as shared.
pub fn response(answer: &Answer) -> HttpResponse {
    let mut resp = HttpResponse::build(answer.status);
    for (name, value) in &answer.headers {
        resp.append_header((name.clone(), value.clone()));
    }
    resp.insert_header(("x-corral-shared", "1"));
    resp.body(answer.body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &'static str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            tokens: Some((1, 2)),
            error: None,
        }
    }

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    #[tokio::test]
    async fn followers_get_the_leaders_answer_and_later_requests_the_kept_one() {
        let d = Dedup::new(Duration::from_secs(60));
        let Turn::Lead(leader) = d.turn(key(1)) else {
            panic!("first request leads")
        };
        let Turn::Wait(slot) = d.turn(key(1)) else {
            panic!("second request waits")
        };
        let waiter = tokio::spawn(wait(slot));
        leader.publish(answer(200, "ok"));
        let got = waiter.await.unwrap().expect("an answer");
        assert_eq!(got.body, "ok");
        assert!(matches!(d.turn(key(1)), Turn::Recent(a) if a.body == "ok"));
        assert!(matches!(d.turn(key(2)), Turn::Lead(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_wakes_its_followers_and_the_next_one_leads() {
        let d = Dedup::new(Duration::from_secs(60));
        let Turn::Lead(leader) = d.turn(key(1)) else {
            panic!("first request leads")
        };
        let slots: Vec<_> = (0..3)
            .map(|_| match d.turn(key(1)) {
                Turn::Wait(s) => s,
                _ => panic!("followers wait"),
            })
            .collect();
        let waiters: Vec<_> = slots.into_iter().map(|s| tokio::spawn(wait(s))).collect();
        drop(leader);
        for w in waiters {
            let got = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("a follower never hangs on a dropped leader");
            assert!(got.unwrap().is_none());
        }
        assert!(d.is_empty());
        assert!(matches!(d.turn(key(1)), Turn::Lead(_)));
    }

    #[tokio::test]
    async fn failures_reach_waiting_followers_but_are_not_kept() {
        let d = Dedup::new(Duration::from_secs(60));
        let Turn::Lead(leader) = d.turn(key(1)) else {
            panic!("first request leads")
        };
        let Turn::Wait(slot) = d.turn(key(1)) else {
            panic!("second request waits")
        };
        leader.publish(answer(502, "bad"));
        assert_eq!(wait(slot).await.expect("an answer").status.as_u16(), 502);
        assert!(d.is_empty());
        assert!(matches!(d.turn(key(1)), Turn::Lead(_)));
    }

    #[test]
    fn answers_expire_oldest_first() {
        let d = Dedup::new(Duration::from_millis(1));
        for n in 0..100 {
            let Turn::Lead(l) = d.turn(key(n)) else {
                panic!("leads")
            };
            l.publish(answer(200, "ok"));
        }
        std::thread::sleep(Duration::from_millis(5));
        let Turn::Lead(_running) = d.turn(key(0)) else {
            panic!("an expired answer is not served")
        };
        let mut t = d.table.lock();
        t.expire(Instant::now(), d.window);
        assert_eq!(t.entries.len(), 1, "only the running entry is left");
        assert_eq!(t.kept.len(), 0);
        assert_eq!(t.kept_bytes, 0);
    }

    #[test]
    fn kept_answers_are_bounded_in_bytes() {
        let d = Dedup::new(Duration::from_secs(60));
        let big = Bytes::from(vec![b'x'; MAX_KEPT_BYTES / 2 + 1]);
        for n in 0..3 {
            let Turn::Lead(l) = d.turn(key(n)) else {
                panic!("leads")
            };
            l.publish(Answer {
                body: big.clone(),
                ..answer(200, "")
            });
        }
        let t = d.table.lock();
        assert_eq!(t.entries.len(), 1, "only one big answer fits");
        assert!(t.kept_bytes <= MAX_KEPT_BYTES);
    }

    #[test]
    fn zero_window_turns_sharing_off() {
        let d = Dedup::new(Duration::ZERO);
        let req = actix_web::test::TestRequest::post()
            .uri("/api/chat")
            .to_http_request();
        assert!(d.key("u", b"{}", &req).is_none());
        let d = Dedup::new(Duration::from_secs(2));
        let k = d.key("u", b"{}", &req).unwrap();
        assert_ne!(Some(k), d.key("v", b"{}", &req), "users never share");
    }
}
