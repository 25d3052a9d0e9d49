//! The topology view: `GET /api/v1/topology` has its shape and agrees with
//! `/status`, and `/ui`, loaded in headless Chromium (Debian's `chromium`,
//! which `scripts/test.sh` installs) on the running demo topology, shows
//! every operator with a non-zero rate and numbers that change between
//! refreshes. The page is read through the DevTools protocol, the way a
//! browser shows it, and a screenshot is saved.

mod common;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use feedstorm::config::FeedConfig;
use feedstorm::runtime::{RunOptions, Running};
use serde_json::{json, Value};

fn get(base: &str, path: &str) -> Value {
    ureq::get(&format!("{base}{path}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

/// The same counters through both routes once every event is in, and the
/// shape: spouts, bolts, sink, edges, figures per window.
#[test]
fn the_topology_api_has_its_shape_and_agrees_with_status() {
    for workers in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let shape = common::Shape {
            events: 600,
            users: 8,
            things: 6,
            ids: 150,
            times: 40,
            spacing: 60_000,
        };
        let mut lines = common::random_lines(7, shape);
        lines.insert(3, "{not json".to_owned());
        lines.push(r#"{"type":"unknown","time":1}"#.to_owned());
        common::write_lines(&path, &lines);
        let mut topology = common::file_topology(&path, false, FeedConfig::default(), dir.path());
        topology.notifications.enabled = true;
        let running = Running::start(&topology, &RunOptions::threads(workers)).unwrap();
        let server = common::serve(&running, &topology, 1000);
        let base = format!("http://{}", server.addr);
        common::wait_caught_up(&running, lines.len() as u64);

        // Figures reach the API within a hand-over (100 ms) of being counted.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (t, status) = loop {
            let status = get(&base, "/status");
            let t = get(&base, "/api/v1/topology");
            let read = &t["spouts"][0]["stats"]["all"]["records_in"];
            let parts = t["spouts"][0]["parts"].as_array().unwrap();
            let positions: u64 = parts.iter().map(|p| p["position"].as_u64().unwrap()).sum();
            if *read == status["events_in"] && positions == lines.len() as u64 {
                break (t, status);
            }
            assert!(
                Instant::now() < deadline,
                "spouts read {read}, /status {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for counter in ["events_in", "events_bad", "feed_deliveries"] {
            assert_eq!(
                t[counter], status[counter],
                "{counter} on {workers} workers"
            );
        }
        assert_eq!(t["events_in"], json!(lines.len()));
        assert_eq!(t["events_bad"], json!(2));
        assert_eq!(t["dead_letters"], json!(2));
        assert_eq!(t["status"], "ACTIVE");
        assert_eq!(t["workers"], json!((0..workers).collect::<Vec<_>>()));
        assert_eq!(t["epochs"]["in_flight"], json!(0));
        assert!(t["epochs"]["written"].as_u64().unwrap() > 0);
        let through = t["epochs"]["written_through"].as_u64().unwrap();
        assert!(through > 0);
        assert_eq!(
            t["epochs"]["acked_through"],
            json!(through),
            "no checkpoints: acked once written"
        );

        let bolts: Vec<&str> = t["bolts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            bolts,
            ["ResolveInterests", "KeepStories", "MaintainHead", "Digest"]
        );
        assert_eq!(t["spouts"][0]["id"], "spouts");
        assert_eq!(t["sink"]["id"], "WriteTo");
        let parts = t["spouts"][0]["parts"].as_array().unwrap();
        assert_eq!(parts.len(), workers, "one turn of the file per worker");
        let positions: u64 = parts.iter().map(|p| p["position"].as_u64().unwrap()).sum();
        assert_eq!(positions, lines.len() as u64, "{parts:?}");

        let components = t["bolts"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&t["spouts"][0], &t["sink"]]);
        for component in components {
            for window in ["1m", "10m", "all"] {
                let figures = &component["stats"][window];
                for key in [
                    "records_in",
                    "records_out",
                    "rate_in",
                    "rate_out",
                    "busy_share",
                    "seconds",
                    "epochs",
                    "epoch_ms_mean",
                    "epoch_ms_p99",
                ] {
                    assert!(
                        figures[key].is_number(),
                        "{} {window} {key}: {figures}",
                        component["id"]
                    );
                }
                let busy = figures["busy_share"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&busy), "{busy}");
            }
            let all = &component["stats"]["all"];
            let moved = all["records_in"].as_u64().unwrap() + all["records_out"].as_u64().unwrap();
            assert!(moved > 0, "{} moved nothing", component["id"]);
        }
        let edges: BTreeSet<(String, String)> = t["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["from"].as_str().unwrap().to_owned(),
                    e["to"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (from, to) in [
            ("spouts", "ResolveInterests"),
            ("spouts", "KeepStories"),
            ("ResolveInterests", "MaintainHead"),
            ("KeepStories", "MaintainHead"),
            ("KeepStories", "Digest"),
            ("KeepStories", "WriteTo"),
            ("MaintainHead", "WriteTo"),
            ("Digest", "WriteTo"),
        ] {
            assert!(
                edges.contains(&(from.to_owned(), to.to_owned())),
                "{from} -> {to} in {edges:?}"
            );
        }
        // Every head change the sink reports came into WriteTo from MaintainHead.
        let sent = |from: &str, to: &str| {
            t["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["from"] == from && e["to"] == to)
                .map(|e| e["stats"]["all"]["records_out"].as_u64().unwrap())
                .unwrap()
        };
        let into_sink = t["sink"]["stats"]["all"]["records_in"].as_u64().unwrap();
        assert_eq!(
            into_sink,
            sent("MaintainHead", "WriteTo")
                + sent("KeepStories", "WriteTo")
                + sent("Digest", "WriteTo"),
            "the sink receives what its three inputs send"
        );
        running.stop().unwrap();
        drop(server);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo topology (in `dir`, where its relative paths land) and
/// waits for its API.
fn start_demo(dir: &Path) -> (Killed, String) {
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/demo.toml");
    std::fs::create_dir_all(dir.join("target")).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_feedstorm"))
        .arg("run")
        .arg(&topology)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(&format!("{base}/health")).call().is_err() {
        assert!(Instant::now() < deadline, "the demo did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, base)
}

/// Headless Chromium on `url`, with its DevTools endpoint.
fn start_chromium(dir: &Path, url: &str) -> (Killed, String) {
    let profile = dir.join("chromium");
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1440,1180",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (Debian's package; scripts/test.sh installs it)");
    let child = Killed(child);
    // Chromium writes the port it chose into the profile.
    let active = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if let Ok(file) = std::fs::File::open(&active) {
            if let Some(Ok(line)) = std::io::BufReader::new(file).lines().next() {
                if !line.is_empty() {
                    break line;
                }
            }
        }
        assert!(Instant::now() < deadline, "chromium did not open DevTools");
        std::thread::sleep(Duration::from_millis(50));
    };
    (child, format!("127.0.0.1:{port}"))
}

/// A DevTools protocol session on one page.
struct DevTools {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
}

impl DevTools {
    fn attach(endpoint: &str, url: &str) -> DevTools {
        let deadline = Instant::now() + Duration::from_secs(30);
        let socket_url = loop {
            let targets: Value = ureq::get(&format!("http://{endpoint}/json/list"))
                .call()
                .unwrap()
                .into_json()
                .unwrap();
            let page = targets.as_array().unwrap().iter().find(|t| {
                t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
            });
            if let Some(page) = page {
                break page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "no page on {url}: {targets}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (socket, _) = tungstenite::connect(socket_url).unwrap();
        DevTools { socket, next_id: 1 }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(tungstenite::Message::text(request.to_string()))
            .unwrap();
        loop {
            let message = self.socket.read().unwrap();
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(answer) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// What the page shows: its refresh count and each operator's row.
    fn read_page(&mut self) -> Value {
        const READ: &str = r##"JSON.stringify({
            refreshes: Number((document.body && document.body.dataset.refreshes) || 0),
            state: (document.getElementById("state") || {}).textContent,
            fetched: performance.getEntriesByType("resource").map(e => e.name),
            linked: document.querySelectorAll("script[src], link[href]:not([href^='data:']), img[src]:not([src^='data:']), iframe").length,
            nodes: [...document.querySelectorAll("#graph g.node")].map(g => g.dataset.id),
            operators: [...document.querySelectorAll("#operators tbody tr")].map(r => ({
                op: r.dataset.op, rate: Number(r.dataset.rate), records: Number(r.dataset.records),
                delta: r.dataset.delta === undefined ? null : Number(r.dataset.delta)})),
        })"##;
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": READ, "returnByValue": true}),
        );
        let value = result["result"]["value"].as_str();
        serde_json::from_str(value.unwrap_or_else(|| panic!("{result}"))).unwrap()
    }

    /// Waits until the page has refreshed at least `refreshes` times.
    fn page_after(&mut self, refreshes: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let page = self.read_page();
            if page["refreshes"].as_u64().unwrap() >= refreshes {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "the page stopped refreshing: {page}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("topology-ui.png")
}

#[test]
#[cfg_attr(
    not(feature = "server-tests"),
    ignore = "needs Chromium, which scripts/test.sh installs"
)]
fn the_topology_page_shows_every_operator_live_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, base) = start_demo(dir.path());
    let url = format!("{base}/ui");
    let (_chromium, endpoint) = start_chromium(dir.path(), &url);
    let mut page = DevTools::attach(&endpoint, &url);

    // Let the demo's initial graph through, then read the page until every
    // operator's numbers have moved since that refresh (an epoch of the
    // demo can take a second, so not every refresh moves every one).
    let first = page.page_after(3);
    let moved = |page: &Value| {
        let records = |p: &Value, op: &Value| {
            p["operators"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["op"] == *op)
                .map(|r| r["records"].as_f64().unwrap())
        };
        page["operators"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| records(page, &r["op"]) > records(&first, &r["op"]))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut second = page.page_after(first["refreshes"].as_u64().unwrap() + 1);
    while !moved(&second) {
        assert!(
            Instant::now() < deadline,
            "numbers did not change: {first} then {second}"
        );
        second = page.page_after(second["refreshes"].as_u64().unwrap() + 1);
    }
    assert_eq!(second["state"], "ACTIVE", "{second}");
    assert!(second["refreshes"].as_u64() > first["refreshes"].as_u64());

    let expected: BTreeSet<&str> = [
        "spouts",
        "ResolveInterests",
        "KeepStories",
        "MaintainHead",
        "Digest",
        "WriteTo",
    ]
    .into();
    let nodes: BTreeSet<&str> = second["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nodes, expected, "the graph draws every operator");
    let ops: BTreeSet<&str> = second["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, expected, "the table lists every operator");
    for row in second["operators"].as_array().unwrap() {
        let rate = row["rate"].as_f64().unwrap();
        assert!(rate > 0.0, "{} shows rate {rate}: {second}", row["op"]);
        // What the page says moved since its previous refresh is a number.
        assert!(row["delta"].as_f64().is_some_and(|d| d >= 0.0), "{row}");
    }

    // Nothing but the binary: no asset linked, every request to the API.
    assert_eq!(second["linked"], 0, "{second}");
    let fetched = second["fetched"].as_array().unwrap();
    assert!(!fetched.is_empty());
    for resource in fetched {
        let resource = resource.as_str().unwrap();
        assert!(
            resource.starts_with(&format!("{base}/api/v1/topology")),
            "fetched {resource}"
        );
    }

    // The README's picture: `FEEDSTORM_UI_WATCH_SECONDS=40` lets the lag
    // chart fill before the screenshot.
    let watch: u64 = std::env::var("FEEDSTORM_UI_WATCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if watch > 0 {
        let now = page.read_page()["refreshes"].as_u64().unwrap();
        page.page_after(now + watch);
    }
    let shot = page.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_path(), &png).unwrap();
    println!("screenshot: {}", screenshot_path().display());
}
