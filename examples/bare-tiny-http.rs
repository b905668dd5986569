//! The floor planbox's request path is measured against: bare tiny_http
//! (same version, `TCP_NODELAY` like planbox's listener, 2 workers blocked in
//! `recv`, `Response::from_data`) answering every request with the bytes of
//! one file as `application/json`.
//!
//! Usage: cargo run --release --example bare-tiny-http -- ADDR FILE [WORKERS]

use std::net::SocketAddr;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bare-tiny-http ADDR FILE [WORKERS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse()?;
    let body: Arc<Vec<u8>> = Arc::new(std::fs::read(&args[2])?);
    let workers: usize = args.get(3).map_or(Ok(2), |w| w.parse())?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let server = Arc::new(
        tiny_http::Server::from_listener(std::net::TcpListener::from(socket), None)
            .map_err(|e| e.to_string())?,
    );
    let json = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
        .map_err(|_| "header")?;
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (server, body, json) = (server.clone(), body.clone(), json.clone());
            std::thread::spawn(move || {
                while let Ok(rq) = server.recv() {
                    let r =
                        tiny_http::Response::from_data(body.as_slice()).with_header(json.clone());
                    let _ = rq.respond(r);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
