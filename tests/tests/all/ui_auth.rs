//! The admin UI's sign-in, CSRF and role rules, in-process (the browser tests in `ui-tests/`
//! cover the same ground in Chromium; these fail fast without one).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use eshost_store::{AppendRequest, ExpectedVersion, ProposedEvent};
use tower::ServiceExt;

use crate::server_support::{bank_config, bank_host};

const TOKENS: &str = "[[tokens]]\ntoken = \"reader-token\"\nrole = \"read\"\nname = \"rey\"\n\
                      [[tokens]]\ntoken = \"admin-token\"\nrole = \"admin\"\nname = \"ada\"\npersonal_data = true\n";

struct Answer {
    status: StatusCode,
    location: Option<String>,
    cookie: Option<String>,
    body: String,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let (location, cookie) = (header(header::LOCATION), header(header::SET_COOKIE));
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap();
    Answer {
        status,
        location,
        cookie,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(uri: &str, session: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri).header(header::HOST, "127.0.0.1:7070");
    if let Some(session) = session {
        request = request.header(header::COOKIE, session);
    }
    request.body(Body::empty()).unwrap()
}

fn post_form(uri: &str, session: &str, form: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::HOST, "127.0.0.1:7070")
        .header(header::COOKIE, session)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap()
}

fn multipart(uri: &str, session: &str, csrf: Option<&str>) -> Request<Body> {
    let mut body = String::new();
    if let Some(csrf) = csrf {
        body.push_str(&format!(
            "--XX\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n"
        ));
    }
    body.push_str(
        "--XX\r\nContent-Disposition: form-data; name=\"plugin\"; filename=\"p.wasm\"\r\n\
         Content-Type: application/wasm\r\n\r\nnot a component\r\n--XX--\r\n",
    );
    Request::post(uri)
        .header(header::HOST, "127.0.0.1:7070")
        .header(header::COOKIE, session)
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XX")
        .body(Body::from(body))
        .unwrap()
}

/// Signs in with `token`; returns the `Cookie` header of the session and its CSRF token.
async fn sign_in(router: &Router, token: &str) -> (String, String) {
    let answer = send(
        router,
        Request::post("/ui/login")
            .header(header::HOST, "127.0.0.1:7070")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "token={token}&next=%2Fui%2Fprojections"
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/ui/projections"));
    let cookie = answer.cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = send(router, get("/ui", Some(&session))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    (session, csrf_of(&page.body))
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field")
        + 19;
    html[at..at + 64].to_owned()
}

async fn projection_state(router: &Router, session: &str) -> String {
    let page = send(router, get("/ui/projections/balances", Some(session))).await;
    assert_eq!(page.status, StatusCode::OK);
    for state in ["running", "paused", "failed", "rebuilding"] {
        if page.body.contains(&format!("class=\"state-{state}\"")) {
            return state.to_owned();
        }
    }
    panic!("no state on the page: {}", page.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_takes_a_configured_token_and_gives_a_strict_session_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), TOKENS);
    let first = send(&router, get("/ui/streams?prefix=a", None)).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    assert_eq!(
        first.location.as_deref(),
        Some("/ui/login?next=%2Fui%2Fstreams%3Fprefix%3Da")
    );
    let wrong = send(
        &router,
        Request::post("/ui/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("token=nobody-token"))
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.cookie.is_none());
    assert!(wrong.body.contains("not configured"), "{}", wrong.body);
    let (session, _) = sign_in(&router, "reader-token").await;
    let page = send(&router, get("/ui", Some(&session))).await;
    assert!(page.body.contains("rey · read"), "{}", page.body);
    // A UI session is not an API credential.
    let api = send(&router, get("/projections", Some(&session))).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    // Server-sent events get a 401, not a redirect to a page.
    let stream = Request::get("/ui/tail/live")
        .header(header::ACCEPT, "text/event-stream")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, stream).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_session_sees_no_admin_control_and_its_forged_posts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), TOKENS);
    let (session, csrf) = sign_in(&router, "reader-token").await;
    for (page, control) in [
        ("/ui/projections/balances", "/pause"),
        ("/ui/projections", "/pause"),
        ("/ui/plugins", "type=\"file\""),
        ("/ui/integrity", "/ui/verify"),
    ] {
        let answer = send(&router, get(page, Some(&session))).await;
        assert_eq!(answer.status, StatusCode::OK, "{page}");
        assert!(!answer.body.contains(control), "{page} shows {control}");
    }
    for forged in [
        "/ui/projections/balances/pause",
        "/ui/projections/balances/rebuild",
        "/ui/verify",
        "/ui/forget",
    ] {
        let form = format!("csrf={csrf}&subject=customer-1");
        let answer = send(&router, post_form(forged, &session, &form)).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{forged}: {}",
            answer.body
        );
        assert!(answer.body.contains("admin role"), "{}", answer.body);
    }
    let upload = multipart("/ui/plugins/balances", &session, Some(&csrf));
    assert_eq!(send(&router, upload).await.status, StatusCode::FORBIDDEN);
    for page in [
        "/ui/compare",
        "/ui/projections/balances/rebuild",
        "/ui/forget?subject=x",
    ] {
        assert_eq!(
            send(&router, get(page, Some(&session))).await.status,
            StatusCode::FORBIDDEN,
            "{page}"
        );
    }
    assert_eq!(projection_state(&router, &session).await, "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_needs_the_sessions_csrf_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), TOKENS);
    let (session, csrf) = sign_in(&router, "admin-token").await;
    let pause = "/ui/projections/balances/pause";
    for form in [
        String::new(),
        format!("csrf={}", "0".repeat(64)),
        "csrf=".into(),
    ] {
        let answer = send(&router, post_form(pause, &session, &form)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{form}");
        assert!(answer.body.contains("CSRF"), "{}", answer.body);
    }
    let mut cross_site = post_form(pause, &session, &format!("csrf={csrf}"));
    cross_site
        .headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    assert_eq!(
        send(&router, cross_site).await.status,
        StatusCode::FORBIDDEN
    );
    // Multipart is for uploads only, and an upload without the field is refused.
    let sneaky = multipart(pause, &session, None);
    assert_eq!(
        send(&router, sneaky).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let upload = multipart("/ui/plugins/balances", &session, None);
    assert_eq!(send(&router, upload).await.status, StatusCode::FORBIDDEN);
    // A form whose file is not a component is refused after the check, naming the problem.
    let upload = send(
        &router,
        multipart("/ui/plugins/balances", &session, Some(&csrf)),
    )
    .await;
    assert_eq!(upload.status, StatusCode::BAD_REQUEST, "{}", upload.body);
    assert_eq!(projection_state(&router, &session).await, "running");
    let answer = send(&router, post_form(pause, &session, &format!("csrf={csrf}"))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(projection_state(&router, &session).await, "paused");
    let resume = "/ui/projections/balances/resume";
    let answer = send(
        &router,
        post_form(resume, &session, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    // Signing out ends the session: its cookie no longer opens a page.
    let out = send(
        &router,
        post_form("/ui/logout", &session, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        send(&router, get("/ui", Some(&session))).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_shown_only_to_a_token_allowed_to_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), TOKENS);
    let event = ProposedEvent::new("CustomerRegistered", "{\"tier\":\"gold\"}")
        .with_personal_data("customer-9", "{\"name\":\"Ann Lee\"}");
    let appended = host
        .host()
        .store()
        .append(AppendRequest::new(
            "customer-9",
            ExpectedVersion::Any,
            vec![event],
        ))
        .await
        .unwrap();
    let page = format!("/ui/events/{}", appended.first_position);
    let (reader, _) = sign_in(&router, "reader-token").await;
    for uri in [
        page.clone(),
        format!("{page}/raw"),
        "/ui/streams/customer-9".into(),
    ] {
        let answer = send(&router, get(&uri, Some(&reader))).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert!(!answer.body.contains("Ann Lee"), "{uri}: {}", answer.body);
    }
    let hidden = send(&router, get(&page, Some(&reader))).await;
    assert!(
        hidden
            .body
            .contains("Hidden: your token may not see personal data")
    );
    let (admin, _) = sign_in(&router, "admin-token").await;
    let shown = send(&router, get(&page, Some(&admin))).await;
    assert!(shown.body.contains("Ann Lee"), "{}", shown.body);
    let raw = send(&router, get(&format!("{page}/raw"), Some(&admin))).await;
    let raw: serde_json::Value = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(raw["personal_data"]["name"], "Ann Lee");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_every_browser_gets_a_session_and_posts_still_need_csrf() {
    let dir = tempfile::tempdir().unwrap();
    let (_host, router) = bank_host(dir.path(), "");
    let first = send(&router, get("/ui", None)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.body.contains("open mode"));
    let session = first
        .cookie
        .expect("a session")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = csrf_of(
        &send(&router, get("/ui/projections", Some(&session)))
            .await
            .body,
    );
    let pause = "/ui/projections/balances/pause";
    assert_eq!(
        send(&router, post_form(pause, &session, "")).await.status,
        StatusCode::FORBIDDEN
    );
    let answer = send(&router, post_form(pause, &session, &format!("csrf={csrf}"))).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(projection_state(&router, &session).await, "paused");
    // The sign-in page has nothing to do in the open mode.
    assert_eq!(
        send(&router, get("/ui/login", None)).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_false_serves_no_ui() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = bank_config(dir.path(), "");
    config.ui = false;
    let host = eshost_server::Server::start(&config).unwrap();
    let router = host.router();
    let answer = send(&router, get("/ui", None)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.contains("no such route"), "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_skips_a_stopped_projections_event_from_its_page() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), TOKENS);
    let junk = tokio::task::block_in_place(|| {
        let request = AppendRequest::new(
            "account-junk",
            ExpectedVersion::Any,
            vec![
                ProposedEvent::new("FundsDeposited", r#"{"amount":"junk"}"#).with_schema_version(2),
            ],
        );
        eshost_store::block_on(host.host().store().append(request))
            .unwrap()
            .first_position
    });
    tokio::task::block_in_place(|| {
        host.projections()
            .wait_for("balances", crate::server_support::WAIT, |s| {
                s.state == eshost_core::projection::ProjectionState::Failed
            })
            .unwrap()
    });
    let (session, csrf) = sign_in(&router, "admin-token").await;
    let page = send(&router, get("/ui/projections/balances", Some(&session))).await;
    assert!(
        page.body.contains(&format!("Skip event {junk}")),
        "{}",
        page.body
    );
    let skip = "/ui/projections/balances/skip";
    let form = format!("csrf={csrf}&position={junk}&reason=bad+import");
    let answer = send(&router, post_form(skip, &session, &form)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(projection_state(&router, &session).await, "running");
    let letters = host.projections().dead_letters("balances").unwrap();
    assert_eq!(letters[0].position, junk);
    assert_eq!(letters[0].reason, "skipped by an operator: bad import");
    // A reader sees no skip control and cannot post one.
    let (reader, reader_csrf) = sign_in(&router, "reader-token").await;
    let form = format!("csrf={reader_csrf}&position={junk}&reason=x");
    let answer = send(&router, post_form(skip, &reader, &form)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_ui_is_recorded_for_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (host, router) = bank_host(dir.path(), TOKENS);
    let (session, csrf) = sign_in(&router, "admin-token").await;
    let rebuild = "/ui/projections/balances/rebuild";
    let answer = send(
        &router,
        post_form(rebuild, &session, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let recorded = tokio::task::block_in_place(|| {
        host.host()
            .store()
            .read_stream("$projections", &eshost_store::StreamRead::forward())
            .unwrap()
    });
    let request = recorded
        .iter()
        .find(|e| e.event_type == "ProjectionRebuildRequested")
        .expect("the rebuild is recorded in $projections");
    let data: serde_json::Value = serde_json::from_str(&request.data).unwrap();
    assert_eq!(data["name"], "balances");
    assert_eq!(data["user"], "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reactors_page_shows_each_reactor_and_only_an_admin_pauses_and_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{TOKENS}{}", crate::reactor_support::transfer_config());
    let (host, router) = bank_host(dir.path(), &extra);
    let state = |body: &str| {
        ["running", "paused", "failed"]
            .into_iter()
            .find(|state| body.contains(&format!("class=\"state-{state}\"")))
            .map(str::to_owned)
    };

    let (reader, reader_csrf) = sign_in(&router, "reader-token").await;
    let page = send(&router, get("/ui/reactors", Some(&reader))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("transfer-saga"), "{}", page.body);
    assert!(
        page.body.contains("/ui/streams/%24reactor-transfer-saga")
            || page.body.contains("/ui/streams/$reactor-transfer-saga"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("/reactors/transfer-saga/pause"),
        "a reader sees no control"
    );
    let plugins = send(&router, get("/ui/plugins", Some(&reader))).await;
    assert!(
        plugins.body.contains("transfer-saga (reactor)"),
        "{}",
        plugins.body
    );
    let forged = post_form(
        "/ui/reactors/transfer-saga/pause",
        &reader,
        &format!("csrf={reader_csrf}"),
    );
    assert_eq!(send(&router, forged).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        state(&send(&router, get("/ui/reactors", Some(&reader))).await.body).as_deref(),
        Some("running")
    );

    let (admin, csrf) = sign_in(&router, "admin-token").await;
    let pause = post_form(
        "/ui/reactors/transfer-saga/pause",
        &admin,
        &format!("csrf={csrf}"),
    );
    let answer = send(&router, pause).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/ui/reactors"));
    let page = send(&router, get("/ui/reactors", Some(&admin))).await;
    assert_eq!(
        state(&page.body).as_deref(),
        Some("paused"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("/reactors/transfer-saga/resume"),
        "{}",
        page.body
    );
    let resume = post_form(
        "/ui/reactors/transfer-saga/resume",
        &admin,
        &format!("csrf={csrf}"),
    );
    assert_eq!(send(&router, resume).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        host.host()
            .reactors()
            .status("transfer-saga")
            .unwrap()
            .state,
        eshost_core::reactor::ReactorState::Running
    );
}

/// With a `stream_prefix`, the stream page links to its aggregate by the aggregate's id, and
/// the timeline reads the prefixed stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_maps_between_an_aggregate_and_its_prefixed_stream() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[aggregates]]\nname = \"customer\"\nplugin = {:?}\nstream_prefix = \"customer-\"\n",
        eshost_tests::CUSTOMER
    );
    let (host, router) = bank_host(dir.path(), &extra);
    host.host()
        .aggregates()
        .execute(
            "customer",
            "c-1",
            r#"{"type":"Register","name":"Ann Lee","email":"ann@example.com"}"#,
            Default::default(),
        )
        .await
        .unwrap();
    let first = send(&router, get("/ui", None)).await;
    let session = first.cookie.expect("a session");
    let session = session.split(';').next().unwrap();
    let stream = send(&router, get("/ui/streams/customer-c-1", Some(session))).await;
    assert_eq!(stream.status, StatusCode::OK, "{}", stream.body);
    assert!(
        stream.body.contains("href=\"/ui/aggregates/customer/c-1\""),
        "{}",
        stream.body
    );
    let timeline = send(&router, get("/ui/aggregates/customer/c-1", Some(session))).await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", timeline.body);
    assert!(
        timeline.body.contains("href=\"/ui/streams/customer-c-1\""),
        "{}",
        timeline.body
    );
}
