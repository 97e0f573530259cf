//! The built-in live dashboard: one page, its script and its stylesheet, embedded in the binary.
//!
//! The page is public on purpose and shows nothing but a login form: every number on it comes
//! from `/admin/api/*`, called by the browser with the admin token the operator typed in. So
//! these handlers check no auth and hold no state; they only serve three constant files with
//! headers that keep the page same-origin (no CDN, no inline script, no external fonts).

use actix_web::{HttpResponse, http::header, web};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// Everything the page loads comes from this origin; the token never leaves it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// Mounts `GET /dashboard`, `/dashboard/`, `/dashboard/app.js` and `/dashboard/app.css`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(index))
        .route("/dashboard/", web::get().to(index))
        .route("/dashboard/app.js", web::get().to(app_js))
        .route("/dashboard/app.css", web::get().to(app_css));
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Revalidate every load so a rolled-out replica never serves a stale script to a page
        // from the new one; the files are a few tens of KiB.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, http::StatusCode, test as web_test};

    #[actix_web::test]
    async fn serves_the_embedded_page_and_assets_without_auth() {
        let app = web_test::init_service(App::new().configure(configure)).await;
        for (path, kind, needle) in [
            ("/dashboard", "text/html", "login-form"),
            ("/dashboard/", "text/html", "login-form"),
            ("/dashboard/app.js", "text/javascript", "sessionStorage"),
            ("/dashboard/app.css", "text/css", "--bg"),
        ] {
            let res =
                web_test::call_service(&app, web_test::TestRequest::get().uri(path).to_request())
                    .await;
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let ct = res.headers().get(header::CONTENT_TYPE).cloned();
            let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).cloned();
            let body = web_test::read_body(res).await;
            let body = String::from_utf8_lossy(&body);
            assert!(
                ct.is_some_and(|v| v.to_str().unwrap_or("").starts_with(kind)),
                "{path}"
            );
            assert!(csp.is_some(), "{path} has a CSP");
            assert!(body.contains(needle), "{path} contains {needle}");
        }
    }

    #[test]
    fn page_loads_nothing_from_other_origins() {
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            // The SVG namespace URI is an identifier, not a fetch.
            let stripped = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!stripped.contains("http://") && !stripped.contains("https://"));
            assert!(
                !stripped.contains("@import"),
                "no external stylesheets or fonts"
            );
        }
    }
}
