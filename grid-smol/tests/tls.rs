//! Two nodes on `https://` hosts over rustls.
#![cfg(feature = "tls")]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grid_smol::Options;
use grid_smol::tls::{SmolTls, TlsManager, rustls, serve_tls};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn configs() -> (rustls::ServerConfig, rustls::ClientConfig) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_der: CertificateDer<'static> = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, client)
}

/// Fails the test instead of hanging.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    futures_lite::future::or(f, async {
        async_io::Timer::after(Duration::from_secs(10)).await;
        panic!("timed out")
    })
    .await
}

#[test]
fn requests_and_streams_over_tls() {
    async_io::block_on(async {
        let (server, client) = configs();
        let server = Arc::new(server);
        let l1 = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h1 = format!("https://{}", l1.local_addr().unwrap());
        let h2 = format!("https://{}", l2.local_addr().unwrap());
        let hosts = [h1.clone(), h2.clone()];
        let rt = SmolTls::new(client);
        let m1 = TlsManager::new(rt.clone(), &h1, &hosts, Options::default()).unwrap();
        let m2 = TlsManager::new(rt, &h2, &hosts, Options::default()).unwrap();
        for m in [&m1, &m2] {
            common::register(m).unwrap();
        }
        grid_smol::spawn(serve_tls(m1.clone(), l1, server.clone())).detach();
        grid_smol::spawn(serve_tls(m2.clone(), l2, server)).detach();
        m1.start();
        m2.start();
        let c = m1.connection(&h2).unwrap();
        bounded(c.wait_for_connect(Duration::from_secs(10)))
            .await
            .unwrap();
        let answer = bounded(c.request(common::ECHO, Bytes::from_static(b"secret")))
            .await
            .unwrap();
        assert_eq!(answer, "secret");
        let (mut tx, mut rx) = bounded(c.open_stream(common::ECHO, Some(Bytes::from_static(b">"))))
            .await
            .unwrap();
        bounded(tx.send(Bytes::from_static(b"x"))).await.unwrap();
        assert_eq!(bounded(rx.recv()).await.unwrap().unwrap(), ">x");
        m1.shutdown(None).await;
        m2.shutdown(None).await;
    });
}

#[test]
fn an_untrusted_certificate_never_connects() {
    async_io::block_on(async {
        let (server, _) = configs();
        let (_, other_client) = configs();
        let l1 = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h1 = format!("https://{}", l1.local_addr().unwrap());
        let h2 = format!("https://{}", l2.local_addr().unwrap());
        let hosts = [h1.clone(), h2.clone()];
        let rt = SmolTls::new(other_client);
        let m1 = TlsManager::new(rt.clone(), &h1, &hosts, Options::default()).unwrap();
        let m2 = TlsManager::new(rt, &h2, &hosts, Options::default()).unwrap();
        let server = Arc::new(server);
        grid_smol::spawn(serve_tls(m1.clone(), l1, server.clone())).detach();
        grid_smol::spawn(serve_tls(m2.clone(), l2, server)).detach();
        m1.start();
        m2.start();
        let c = m1.connection(&h2).unwrap();
        let r = c.wait_for_connect(Duration::from_millis(1500)).await;
        assert_eq!(r, Err(grid_smol::CallError::NotConnected));
        m1.shutdown(None).await;
        m2.shutdown(None).await;
    });
}

/// A client that connects and never starts the TLS handshake is dropped
/// after `handshake_timeout`.
#[test]
fn a_stalled_tls_handshake_is_dropped() {
    async_io::block_on(async {
        let (server, client) = configs();
        let l = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = format!("https://{addr}");
        let mut options = Options::default();
        options.connection.handshake_timeout = Duration::from_millis(300);
        let m = TlsManager::new(SmolTls::new(client), &h, &[&h], options).unwrap();
        grid_smol::spawn(serve_tls(m.clone(), l, Arc::new(server))).detach();
        // A blocking client on its own thread; the read's own timeout
        // bounds the wait.
        let took = std::thread::spawn(move || {
            use std::io::Read;
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let start = std::time::Instant::now();
            // EOF (or a reset), not the 5 s read timeout.
            assert!(matches!(tcp.read(&mut [0u8; 64]), Ok(0) | Err(_)));
            start.elapsed()
        })
        .join()
        .unwrap();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    });
}
