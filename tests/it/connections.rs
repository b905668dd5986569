//! The connection layer against raw TCP clients: request bodies, caps
//! while reading, the connection cap and its policy, bursts of keep-alive
//! clients. No test asserts a speed: waits are generous and only tell a
//! working server from one that waits for an idle timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use planbox::server::ServerConfig;

use crate::support::*;

fn server_with(cfg: ServerConfig) -> (TempStore, TestServer, SocketAddr) {
    let t = temp_store();
    let s = TestServer::start_with(&t.db, Tz::UTC, cfg);
    let addr = s.server.as_ref().unwrap().local_addr();
    (t, s, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// Reads one answer with a `Content-Length` (or none, then up to the
/// close): (head, body). `None` when the connection closed first.
fn answer(c: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => return None,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("no answer: {e} after {:?}", String::from_utf8_lossy(&head)),
        }
    }
    let head = String::from_utf8(head).unwrap();
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().unwrap())
    });
    let body = match len {
        Some(n) => {
            let mut body = vec![0u8; n];
            c.read_exact(&mut body).unwrap();
            body
        }
        None => Vec::new(),
    };
    Some((head, body))
}

/// Waits (at most 30 s) until the server holds `n` open connections.
fn wait_for_open(running: &planbox::server::RunningServer, n: usize) {
    let started = Instant::now();
    while running.open_connections() < n && started.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(10));
    }
}

/// True when the server closed `c` (EOF or reset) within the read timeout.
fn closed(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_huge_content_length_is_answered_and_the_server_lives_on() {
    let (_t, s, addr) = server_with(ServerConfig::default());
    // More times than there are workers: no request may end one.
    for length in ["9000000000000000000", "18446744073709551615"] {
        for _ in 0..3 {
            let mut c = connect(addr);
            write!(
                c,
                "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\nabc"
            )
            .unwrap();
            let (head, _) = answer(&mut c).expect("an answer");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            // The body will never all come: the connection is closed
            // rather than read to its announced end.
            assert!(head.contains("Connection: close"), "{head}");
            assert!(closed(&mut c));
        }
    }
    // A length that is not a number is a 400, and the connection closes.
    let mut c = connect(addr);
    c.write_all(b"GET /health HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n")
        .unwrap();
    let (head, body) = answer(&mut c).unwrap();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("bad_request"));
    assert!(closed(&mut c));
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn a_small_body_is_dropped_and_the_connection_answers_the_next_request() {
    let (_t, _s, addr) = server_with(ServerConfig::default());
    let mut c = connect(addr);
    // The body arrives after the answer, split, with the next request
    // right behind it: it is dropped, never read as a request.
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 38\r\n\r\n")
        .unwrap();
    let (head, _) = answer(&mut c).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("Connection: close"), "{head}");
    c.write_all(b"GET /nope HTTP/1.1\r\n\r\n").unwrap();
    thread::sleep(Duration::from_millis(50));
    c.write_all(b"0123456789abcdefGET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, _) = answer(&mut c).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Pipelined: two requests in one write, two answers in order.
    c.write_all(b"GET /nope HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(answer(&mut c).unwrap().0.starts_with("HTTP/1.1 404"));
    assert!(answer(&mut c).unwrap().0.starts_with("HTTP/1.1 200"));
}

#[test]
fn a_chunked_body_is_refused_and_never_read_as_a_request() {
    let (_t, s, addr) = server_with(ServerConfig::default());
    // Behind a proxy that reuses connections, a body parsed as the next
    // request would answer someone else: the body here is a request.
    let smuggled = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    for (coding, status) in [
        ("chunked", "411"),
        ("gzip", "400"),
        ("gzip, chunked", "411"),
    ] {
        let mut c = connect(addr);
        write!(
            c,
            "GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {coding}\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
            smuggled.len()
        )
        .unwrap();
        let (head, body) = answer(&mut c).unwrap();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{coding}: {head}"
        );
        assert!(head.contains("Connection: close"), "{head}");
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(body.contains("\"error\""), "{body}");
        // Nothing more: no answer to the smuggled request.
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    // Another method with a chunked body: the API's 405, connection closed.
    let mut c = connect(addr);
    c.write_all(b"POST /search HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .unwrap();
    let (head, _) = answer(&mut c).unwrap();
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert!(closed(&mut c));
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn request_lines_and_heads_are_capped_while_they_are_read() {
    let (_t, s, addr) = server_with(ServerConfig::default());
    // A request line that never ends: 414 once it passes the cap, without
    // waiting for the rest (the client is still sending).
    let mut c = connect(addr);
    let mut line = b"GET /".to_vec();
    line.resize(64 << 10, b'a');
    let _ = c.write_all(&line);
    let (head, _) = answer(&mut c).expect("an answer before the line ends");
    assert!(head.starts_with("HTTP/1.1 414"), "{head}");
    assert!(closed(&mut c));
    // Headers that never end: 431.
    let mut c = connect(addr);
    c.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    for i in 0..200 {
        if write!(c, "X-Pad-{i}: {}\r\n", "b".repeat(200)).is_err() {
            break;
        }
    }
    let (head, _) = answer(&mut c).expect("an answer before the head ends");
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    assert!(closed(&mut c));
    // More header lines than planbox reads, each short: 431 too.
    let mut req = String::from("GET /health HTTP/1.1\r\n");
    for i in 0..150 {
        req.push_str(&format!("X-{i}: 1\r\n"));
    }
    req.push_str("\r\n");
    let mut c = connect(addr);
    c.write_all(req.as_bytes()).unwrap();
    assert!(answer(&mut c).unwrap().0.starts_with("HTTP/1.1 431"));
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn a_dripping_head_is_closed_one_idle_timeout_after_its_first_byte() {
    let (_t, s, addr) = server_with(ServerConfig {
        workers: 2,
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let mut c = connect(addr);
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut was_closed = false;
    // One byte every 50 ms never lets the connection go quiet for the
    // idle timeout, yet the head never ends: the server closes it.
    for b in b"GET /health HTTP/1.1\r\nX-Slow: "
        .iter()
        .cycle()
        .take(2_000)
    {
        if c.write_all(&[*b]).is_err() {
            was_closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match c.read(&mut buf) {
            Ok(0) => {
                was_closed = true;
                break;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                was_closed = true;
                break;
            }
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    assert!(was_closed, "a head dripping for 30 s was never closed");
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn a_burst_of_keep_alive_clients_is_answered_while_earlier_ones_stay_idle() {
    // The idle timeout is far longer than the clients' patience: an answer
    // that waited for an idle connection to time out would never come.
    let (_t, s, addr) = server_with(ServerConfig {
        workers: 2,
        idle_timeout: Duration::from_secs(120),
        ..ServerConfig::default()
    });
    let mut all = Vec::new();
    for round in 0..2 {
        let mut clients: Vec<TcpStream> = (0..500).map(|_| connect(addr)).collect();
        for c in &mut clients {
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        }
        for c in &mut clients {
            let (head, _) = answer(c).unwrap_or_else(|| panic!("round {round}: closed"));
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        // They stay open and idle while the next burst comes.
        all.extend(clients);
    }
    assert_eq!(s.server.as_ref().unwrap().open_connections(), 1000);
    // Each idle connection still answers its next request.
    for c in all.iter_mut().step_by(97) {
        c.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        assert!(answer(c).unwrap().0.starts_with("HTTP/1.1 200"));
    }
}

#[test]
fn beyond_the_connection_cap_the_longest_idle_goes_first_then_503() {
    let (_t, s, addr) = server_with(ServerConfig {
        workers: 2,
        max_connections: 4,
        ..ServerConfig::default()
    });
    let running = s.server.as_ref().unwrap();
    assert_eq!(running.max_connections(), 4);
    let ask = |c: &mut TcpStream| {
        c.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        answer(c)
    };
    // Four idle keep-alive connections, the first one idle longest.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        let mut c = connect(addr);
        assert!(ask(&mut c).is_some());
        idle.push(c);
        thread::sleep(Duration::from_millis(20));
    }
    // A fifth: the first is closed to make room, the fifth is answered.
    let mut fifth = connect(addr);
    assert!(ask(&mut fifth).unwrap().0.starts_with("HTTP/1.1 200"));
    assert!(closed(&mut idle[0]), "the longest-idle connection was kept");
    assert_eq!(running.evicted(), 1);
    for c in &mut idle[1..] {
        assert!(ask(c).unwrap().0.starts_with("HTTP/1.1 200"));
    }
    // Every connection mid-request (heads not finished): none is idle, so
    // a new one is told to come back.
    for c in idle[1..].iter_mut().chain([&mut fifth]) {
        c.write_all(b"GET /hea").unwrap();
    }
    thread::sleep(Duration::from_millis(200));
    let mut extra = connect(addr);
    let (head, body) = answer(&mut extra).expect("a 503 before the close");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("overloaded"));
    assert!(closed(&mut extra));
    assert_eq!(running.refused_connections(), 1);
    // The ones mid-request finish and are answered.
    for c in idle[1..].iter_mut().chain([&mut fifth]) {
        c.write_all(b"lth HTTP/1.1\r\n\r\n").unwrap();
        assert!(answer(c).unwrap().0.starts_with("HTTP/1.1 200"));
    }
}

/// The value of the `/metrics` line that starts with `series` (name and
/// labels), asked on the kept-alive connection `c`.
fn scrape(c: &mut TcpStream, series: &str) -> u64 {
    c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let (head, body) = answer(c).expect("a /metrics answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn metrics_count_connections_opened_evicted_refused_and_closed_by_the_client() {
    let (_t, s, addr) = server_with(ServerConfig {
        workers: 2,
        max_connections: 2,
        ..ServerConfig::default()
    });
    let ask = |c: &mut TcpStream| {
        c.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        answer(c).unwrap().0
    };
    let main = |what: &str| format!("planbox_http_connections_{what}{{listener=\"main\"}}");
    let closed_for = |why: &str| {
        format!("planbox_http_connections_closed_total{{listener=\"main\",reason=\"{why}\"}}")
    };
    let mut first = connect(addr);
    ask(&mut first);
    thread::sleep(Duration::from_millis(20));
    let mut second = connect(addr);
    assert_eq!(scrape(&mut second, &main("open")), 2);
    assert_eq!(scrape(&mut second, &main("max")), 2);
    assert_eq!(scrape(&mut second, &closed_for("evicted")), 0);
    // A third at the cap: the longest-idle (the first) is closed for it.
    let mut third = connect(addr);
    assert!(ask(&mut third).starts_with("HTTP/1.1 200"));
    assert!(closed(&mut first));
    assert_eq!(scrape(&mut third, &closed_for("evicted")), 1);
    assert_eq!(scrape(&mut third, &main("open")), 2);
    // Both mid-request: a fourth is refused with 503.
    for c in [&mut second, &mut third] {
        c.write_all(b"GET /hea").unwrap();
    }
    thread::sleep(Duration::from_millis(200));
    let mut fourth = connect(addr);
    assert!(ask(&mut fourth).starts_with("HTTP/1.1 503"));
    for c in [&mut second, &mut third] {
        c.write_all(b"lth HTTP/1.1\r\n\r\n").unwrap();
        assert!(answer(c).unwrap().0.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(scrape(&mut third, &closed_for("refused")), 1);
    assert_eq!(scrape(&mut third, &main("accepted_total")), 4);
    assert_eq!(scrape(&mut third, &main("open")), 2);
    // The client hangs up: counted once the poller sees it.
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&mut third, &closed_for("client_closed")) == 0 {
        assert!(Instant::now() < deadline, "the close was never counted");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(scrape(&mut third, &main("open")), 1);
    let running = s.server.as_ref().unwrap();
    assert_eq!((running.evicted(), running.refused_connections()), (1, 1));
    assert_eq!(running.open_connections(), 1, "the gauge and the cap agree");
}

#[test]
fn the_connection_cap_comes_from_the_command_line() {
    use clap::Parser;
    let parse = |args: &[&str]| {
        let cli = planbox::cli::Cli::try_parse_from(args).unwrap();
        let planbox::cli::Command::Serve(a) = cli.command else {
            panic!("not serve")
        };
        a.to_config()
    };
    let c = parse(&["planbox", "serve", "--max-connections", "100"]).unwrap();
    assert_eq!(c.max_connections, 100);
    let c = parse(&["planbox", "serve"]).unwrap();
    assert_eq!(c.max_connections, planbox::server::DEFAULT_MAX_CONNECTIONS);
    let e = parse(&["planbox", "serve", "--max-connections", "0"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--max-connections"), "{e}");
}

#[test]
fn unfinished_heads_over_the_memory_budget_are_closed_largest_first() {
    let (_t, s, addr) = server_with(ServerConfig {
        head_budget: 64 << 10,
        idle_timeout: Duration::from_secs(120),
        ..ServerConfig::default()
    });
    // Twelve heads of ~10 KiB that never end (each under the head limit):
    // together over the budget.
    let mut heads: Vec<TcpStream> = (0..12)
        .map(|i| {
            let mut c = connect(addr);
            write!(
                c,
                "GET /health HTTP/1.1\r\nX-Pad: {}",
                "p".repeat(10_000 + i * 100)
            )
            .unwrap();
            c
        })
        .collect();
    // The largest are told to come back and closed until the rest fit.
    let running = s.server.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while running.open_connections() > 8 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let mut refused = 0;
    for c in heads.iter_mut().rev() {
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("overloaded"), "{text}");
            refused += 1;
        }
    }
    assert!((4..12).contains(&refused), "{refused} refused");
    // The largest went first: the smallest head is still open and, once
    // whole, answered.
    heads[0]
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    heads[0].write_all(b"\r\n\r\n").unwrap();
    assert!(answer(&mut heads[0]).unwrap().0.starts_with("HTTP/1.1 200"));
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn an_absolute_form_target_is_answered_as_its_path() {
    // RFC 9112 §3.2.2: a server must accept `GET http://host/path`, which
    // some proxies and clients send to an origin server.
    let (_t, _s, addr) = server_with(ServerConfig::default());
    let mut c = connect(addr);
    for (target, status) in [
        ("http://localhost/health", "200"),
        ("HTTPS://planbox.example:8443/ready", "200"),
        ("http://localhost/health?verbose=1", "200"),
        ("http://localhost/nope", "404"),
        // Not absolute-form: stays a path that does not exist.
        ("ftp://localhost/health", "404"),
    ] {
        write!(c, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, body) = answer(&mut c).expect("an answer");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{target}: {head}"
        );
        if status == "404" {
            assert!(String::from_utf8_lossy(&body).contains("not_found"));
        }
    }
}

#[test]
fn at_the_connection_cap_new_connections_are_not_closed_as_idle() {
    // In a burst at the cap, a connection just accepted has its request on
    // the way but not read yet: closing it as "idle" would leave that
    // client an empty reply, which clients do not retry on a new
    // connection. Only connections answered before are closed for room;
    // here none is, so the newcomer gets the 503.
    let (_t, s, addr) = server_with(ServerConfig {
        workers: 2,
        max_connections: 4,
        ..ServerConfig::default()
    });
    let running = s.server.as_ref().unwrap();
    let mut fresh: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    wait_for_open(running, 4);
    let mut extra = connect(addr);
    extra.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let (head, _) = answer(&mut extra).expect("a 503 before the close");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(running.evicted(), 0);
    // The four let in are answered when their requests come.
    for c in &mut fresh {
        c.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
        let (head, _) = answer(c).expect("an answer, not a close");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
}

#[test]
fn every_connection_refused_at_the_cap_gets_its_503() {
    // Refused connections linger (their input read) in a bounded reserve;
    // beyond it a refused client is still told why, not just closed.
    let (_t, s, addr) = server_with(ServerConfig {
        workers: 2,
        max_connections: 4,
        idle_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    });
    let running = s.server.as_ref().unwrap();
    let _held: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    wait_for_open(running, 4);
    // More refused clients than the reserve (4 / 8 + 16), all kept open.
    // (They send nothing: a request arriving after the close could reset
    // the connection before the answer is read, which is not the point.)
    let mut refused = Vec::new();
    for i in 0..24 {
        let mut c = connect(addr);
        let (head, body) = answer(&mut c).unwrap_or_else(|| panic!("client {i}: no answer"));
        assert!(head.starts_with("HTTP/1.1 503"), "client {i}: {head}");
        assert!(String::from_utf8_lossy(&body).contains("overloaded"));
        refused.push(c);
    }
}

#[test]
fn clients_that_never_read_a_large_answer_do_not_hold_health_or_small_searches() {
    let t = temp_store();
    // ~9 MB: more than the kernel buffers hold on loopback.
    crate::answers::generated_store(&t.db, 40_000, "p");
    let s = TestServer::start_with(
        &t.db,
        Tz::UTC,
        ServerConfig {
            workers: 2,
            // Long enough that waiting it out cannot pass for an answer.
            idle_timeout: Duration::from_secs(30),
            ..ServerConfig::default()
        },
    );
    let server = s.server.as_ref().unwrap();
    let addr = server.local_addr();
    // Twice as many clients as workers ask for the whole store and never
    // read a byte of it.
    let stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            sock.connect(&addr.into()).unwrap();
            let mut c: TcpStream = sock.into();
            c.write_all(b"GET /search HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    // Every one of them holds a worker, stalled.
    let t0 = Instant::now();
    while server.workers() < 2 + stalled.len() && t0.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.workers() >= 2 + stalled.len(),
        "{}",
        server.workers()
    );
    let t0 = Instant::now();
    assert_eq!(s.get("/health").status, 200);
    // `/metrics` shows the spares and the stalled writes.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        scrape(&mut c, "planbox_http_workers{listener=\"main\"}"),
        server.workers() as u64
    );
    assert_eq!(
        scrape(&mut c, "planbox_http_workers_stalled{listener=\"main\"}"),
        stalled.len() as u64
    );
    let small = s.get("/search?starts_at=2021-01-02T00:00:00&ends_at=2021-01-02T23:59:59");
    assert_eq!(small.status, 200);
    assert!(small.json()["data"]["events"]
        .as_array()
        .is_some_and(|d| !d.is_empty()));
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // Once the clients go, the spares end and the pool is back to its size.
    drop(stalled);
    let t0 = Instant::now();
    while server.workers() > 2 && t0.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.workers(), 2);
    assert_eq!(scrape(&mut c, "planbox_http_workers{listener=\"main\"}"), 2);
    assert_eq!(
        scrape(&mut c, "planbox_http_workers_stalled{listener=\"main\"}"),
        0
    );
    assert!(server.is_alive(Duration::from_secs(30)));
}
