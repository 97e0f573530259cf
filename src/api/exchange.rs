//! The request path, top-down: one [`Exchange`] per generation request walks
//! admit (auth, body, decode, rate limits, duplicate suppression) → resolve (aliases, the
//! virtual `auto` model; fallbacks come with placement) → place and send with failover
//! ([`forward::open`]) → relay (streamed or whole) → finish. Every outcome is recorded by
//! the request's [`Record`] when it is dropped ([`super::finish`]), on every path.

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::{Stream, StreamExt};

use crate::Gateway;
use crate::api::dedup::{self, Failed, How, Turn};
use crate::api::finish::{Record, health_of};
use crate::api::forward::{self, Upstream};
use crate::api::frontend::{Frontend, Inbound, Request, Whole};
use crate::dialect::Dialect;
use crate::dialect::relay::Relay;
use crate::error::{ErrorKind, GatewayError};
use crate::upstream::UpstreamClients;

/// Largest non-streamed upstream answer read whole (embeddings of long batches).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One admitted request on its way through the phases.
pub struct Exchange {
    gw: web::Data<Gateway>,
    front: Frontend,
    request: Request,
    stream: bool,
    /// Reasoning the client did not ask for (or the model cannot show) is dropped.
    hide_thinking: bool,
    record: Record,
}

/// Serves one generation request of `dialect`, decoded by `decode`.
pub async fn serve(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    clients: web::Data<UpstreamClients>,
    dialect: Dialect,
    decode: impl FnOnce(Bytes) -> Result<Inbound, GatewayError>,
) -> HttpResponse {
    match Exchange::admit(&req, payload, gw, dialect, decode).await {
        Ok(exchange) => exchange.run(&req, &clients).await,
        Err(refused) => refused,
    }
}

impl Exchange {
    /// Phase 1: who is asking, what for, and whether their limits allow it. A refusal by
    /// the rate limiter is recorded like any answered request; a request that fails auth
    /// or decoding is not (it never became one).
    async fn admit(
        req: &HttpRequest,
        payload: web::Payload,
        gw: web::Data<Gateway>,
        dialect: Dialect,
        decode: impl FnOnce(Bytes) -> Result<Inbound, GatewayError>,
    ) -> Result<Exchange, HttpResponse> {
        let refuse = |e: GatewayError| e.response(dialect);
        let caller = super::authenticate(req, &gw).await.map_err(refuse)?;
        let limit = gw.config.server.body_limit.as_u64() as usize;
        let body = super::read_body(payload, req, limit)
            .await
            .map_err(refuse)?;
        let body = super::policy::client_body(&gw.config.routing, req.path(), caller.admin, body);
        let inbound = decode(body.clone()).map_err(refuse)?;
        let mut record = Record::new(gw.clone(), req, dialect, caller.name, inbound.model, body);
        // A generating request reserves its whole possible answer too, so parallel requests
        // cannot all be admitted on their inputs alone.
        let output = if inbound.generates {
            inbound
                .output
                .unwrap_or(u64::from(gw.config.auth.tpm_output_allowance))
        } else {
            0
        };
        let estimate = crate::ir::estimate_tokens(record.body().len()).saturating_add(output);
        match gw
            .limiter
            .check(record.user(), caller.rpm, caller.tpm, estimate)
            .await
        {
            Ok(grant) => record.reserve(grant),
            Err(e) => {
                record.failed(e.status(dialect).as_u16(), &e, None, None);
                return Err(e.response(dialect));
            }
        }
        Ok(Exchange {
            gw,
            front: inbound.front,
            request: inbound.request,
            stream: inbound.stream,
            hide_thinking: false,
            record,
        })
    }

    /// Duplicate suppression, the end of admission: the first of identical whole-answer
    /// requests of one user runs and publishes its answer; the others share it.
    async fn run(self, req: &HttpRequest, clients: &UpstreamClients) -> HttpResponse {
        let is_show = matches!(self.front, Frontend::Ollama { path: "/api/show" });
        let key = if self.stream || is_show {
            None
        } else {
            self.gw
                .dedup
                .key(self.record.user(), self.record.body(), req)
        };
        let Some(key) = key else {
            return self.proxy(req, clients).await;
        };
        let gw = self.gw.clone();
        let leader = loop {
            match gw.dedup.turn(key) {
                Turn::Lead(leader) => break leader,
                Turn::Recent(answer) => return self.follow(&answer, How::Recent),
                Turn::Wait(slot) => {
                    if let Some(answer) = dedup::wait(slot).await {
                        return self.follow(&answer, How::Inflight);
                    }
                    // The leader's client went away: lead now, or follow whoever does.
                }
            }
        };
        let (resp, answer) = dedup::capture(self.proxy(req, clients).await);
        if let Some(answer) = answer {
            leader.publish(answer);
        }
        resp
    }

    /// A duplicate's answer: the leader's, recorded with its backend, model and tokens.
    fn follow(mut self, answer: &dedup::Answer, how: How) -> HttpResponse {
        let header = |name| {
            answer
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        self.record.shared(
            how,
            answer.status.as_u16(),
            header("x-corral-backend"),
            header("x-corral-model"),
            header("x-corral-category"),
            answer.tokens,
            answer.error.clone(),
        );
        dedup::response(answer)
    }

    /// Phases 2 to 4: resolve, place and send, relay. Errors before the first byte are
    /// answered in the client's dialect.
    async fn proxy(mut self, req: &HttpRequest, clients: &UpstreamClients) -> HttpResponse {
        let target = match self.resolve(clients).await {
            Ok(t) => t,
            Err(e) => return self.fail(e),
        };
        let target = match self.fit(clients, target).await {
            Ok(t) => t,
            Err(e) => return self.fail(e),
        };
        if let Some(body) = self
            .front
            .local_answer(&self.gw, &target, self.record.requested())
        {
            self.record.answered(None);
            return HttpResponse::Ok().json(body);
        }
        let (requested, attempts) = self.record.for_attempts();
        let build = |b: &_, served: &str| self.request.call(b, served, requested, req.headers());
        let served = match forward::open(&self.gw, clients, &target, &build, attempts).await {
            Ok(s) => s,
            Err(e) => return self.fail(e),
        };
        let upstream = self.record.served(served);
        if self.stream {
            self.relay_stream(upstream)
        } else {
            self.relay_whole(upstream).await
        }
    }

    /// Phase 2: the model to place. Aliases first, then the virtual `auto` model, which
    /// classifies the request and records its category; fallbacks are tried by placement.
    async fn resolve(&mut self, clients: &UpstreamClients) -> Result<String, GatewayError> {
        let gw = &self.gw;
        let requested = self.record.requested();
        let target = gw.aliases.resolve(requested);
        if !self.request.may_be_auto() || !gw.auto.is_auto(target) {
            return Ok(target.to_string());
        }
        let Some(chat) = self.request.chat()? else {
            return Err(GatewayError::bad_field(
                "model",
                format!("\"{requested}\" picks chat models only; name an embedding model"),
            ));
        };
        let catalogue = crate::api::auto_catalogue(gw, clients).await;
        let views = gw.fleet.snapshot().await;
        let decision = gw.auto.decide(chat, &catalogue, &views);
        let category = decision.classification.category.to_string();
        let choice = decision.choice;
        self.record.set_category(category);
        match choice {
            Ok(choice) => Ok(choice.model),
            Err(none) => Err(GatewayError::new(ErrorKind::NoCapacity, none.to_string())),
        }
    }

    /// Phase 2, continued: a model of the chain that has what the request wants
    /// (thinking, tools, images); the request is fitted to what that model can show.
    async fn fit(
        &mut self,
        clients: &UpstreamClients,
        target: String,
    ) -> Result<String, GatewayError> {
        let wants = self.request.wants();
        let fit = super::fit_features(&self.gw, clients, target, wants).await?;
        self.hide_thinking = self.request.fit_thinking(fit.thinking)?;
        Ok(fit.model)
    }

    /// A failure before any byte reached the client.
    fn fail(mut self, e: GatewayError) -> HttpResponse {
        let status = e.status(self.front.dialect()).as_u16();
        self.record.failed(status, &e, None, None);
        let mut resp = self.front.error(&e);
        resp.extensions_mut().insert(Failed(e.message));
        resp
    }

    /// The client's model name when the served one differs (an alias or a fallback).
    fn rewrite(&self) -> Option<String> {
        let requested = self.record.requested();
        (self.record.served_model() != requested).then(|| requested.to_string())
    }

    /// Phase 4, streamed: frames go out as they are translated; the record travels with
    /// the stream, so a client that goes away mid-way is recorded too.
    fn relay_stream(self, upstream: Upstream) -> HttpResponse {
        let kind = upstream.backend.config.kind;
        let relay = self.front.relay(
            &self.request,
            kind,
            self.record.requested(),
            self.rewrite(),
            self.hide_thinking,
        );
        let mut resp = HttpResponse::Ok();
        resp.content_type(self.front.stream_type());
        self.record
            .served_headers(&mut resp, &upstream.backend, None);
        resp.streaming(relay_stream(upstream, relay, self.record))
    }

    /// Phase 4, whole: read, translate, answer.
    async fn relay_whole(mut self, mut upstream: Upstream) -> HttpResponse {
        let kind = upstream.backend.config.kind;
        let rewrite = self.rewrite();
        let answer = forward::collect(&mut upstream, MAX_BODY)
            .await
            .and_then(|bytes| {
                self.front.whole(
                    &self.request,
                    kind,
                    bytes,
                    self.record.requested(),
                    rewrite.as_deref(),
                    self.hide_thinking,
                )
            });
        let (body, tokens) = match answer {
            Ok(a) => a,
            Err(e) => {
                let status = e.status(self.front.dialect()).as_u16();
                self.record.failed(status, &e, Some(health_of(&e)), None);
                let mut resp = self.front.error(&e);
                resp.extensions_mut().insert(Failed(e.message));
                return resp;
            }
        };
        self.record.answered(tokens);
        let mut resp = HttpResponse::Ok();
        self.record
            .served_headers(&mut resp, &upstream.backend, tokens);
        match body {
            Whole::Json(v) => resp.json(v),
            Whole::Bytes(b) => resp.content_type("application/json; charset=utf-8").body(b),
        }
    }
}

/// Streams the answer through `relay`, enforcing the idle limit between chunks. A failure
/// after the first byte ends the stream with the dialect's error frame, never a clean end.
fn relay_stream(
    mut upstream: Upstream,
    mut relay: Relay,
    mut record: Record,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let idle = upstream.backend.config.idle_timeout;
    async_stream::stream! {
        let mut out = BytesMut::new();
        let mut pending = upstream.first.take();
        loop {
            let step = match pending.take() {
                Some(chunk) => Ok(Some(Ok(chunk))),
                None => tokio::time::timeout(idle, upstream.body.next()).await,
            };
            let outcome = match step {
                Err(_) => Err(GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    format!("backend {} stopped responding", upstream.backend.name),
                )),
                Ok(Some(Err(e))) => Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("backend {} broke off: {e}", upstream.backend.name),
                )
                .with_cause(e)),
                Ok(Some(Ok(chunk))) => relay.chunk(&chunk, &mut out).map(|()| false),
                Ok(None) => relay.end(&mut out).map(|()| true),
            };
            // Whatever else the upstream already sent goes to the client in the same write.
            let outcome = match outcome {
                Ok(false) => batch(&mut upstream, &mut relay, &mut out),
                other => other,
            };
            if !out.is_empty() {
                yield Ok(out.split().freeze());
            }
            match outcome {
                Ok(false) => continue,
                Ok(true) => {
                    record.answered(relay.usage());
                    break;
                }
                Err(e) => {
                    let e = e.after_first_byte();
                    tracing::warn!(request_id = %record.request_id(), "stream ended with an error: {e}");
                    record.failed(502, &e, Some(health_of(&e)), relay.usage());
                    yield Ok(relay.error_frame(&e));
                    break;
                }
            }
        }
    }
}

/// Most client bytes gathered from ready upstream frames before they are written.
const BATCH_MAX: usize = 64 * 1024;

/// Feeds `relay` the body frames that are ready now, without waiting, up to [`BATCH_MAX`]
/// bytes of output: true when the body ended among them.
fn batch(
    upstream: &mut Upstream,
    relay: &mut Relay,
    out: &mut BytesMut,
) -> Result<bool, GatewayError> {
    use futures_util::FutureExt as _;
    while out.len() < BATCH_MAX {
        match upstream.body.next().now_or_never() {
            None => return Ok(false),
            Some(Some(Ok(chunk))) => relay.chunk(&chunk, out)?,
            Some(None) => return relay.end(out).map(|()| true),
            Some(Some(Err(e))) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("backend {} broke off: {e}", upstream.backend.name),
                ));
            }
        }
    }
    Ok(false)
}
