//! Loopback smoke test.
mod common;

use std::time::Duration;

use bytes::Bytes;
use grid_tokio::{Manager, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_echo() {
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h1 = format!("http://{}", l1.local_addr().unwrap());
    let h2 = format!("http://{}", l2.local_addr().unwrap());
    let hosts = [h1.clone(), h2.clone()];
    let m1 = Manager::new(grid_tokio::Tokio, &h1, &hosts, Options::default()).unwrap();
    let m2 = Manager::new(grid_tokio::Tokio, &h2, &hosts, Options::default()).unwrap();
    common::register(&m1).unwrap();
    common::register(&m2).unwrap();
    tokio::spawn(grid_tokio::serve(m1.clone(), l1));
    tokio::spawn(grid_tokio::serve(m2.clone(), l2));
    m1.start();
    m2.start();
    let c = m1.connection(&h2).unwrap();
    c.wait_for_connect(Duration::from_secs(5)).await.unwrap();
    let r = c
        .request(common::ECHO, Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(r, "hello");
    let c2 = m2.connection(&h1).unwrap();
    c2.wait_for_connect(Duration::from_secs(5)).await.unwrap();
    let r = c2
        .request(common::FAIL_OR_COUNT, Bytes::from_static(b"boom"))
        .await;
    assert_eq!(r, Err(grid_tokio::CallError::Remote("boom".into())));
    let (mut tx, mut rx) = c
        .open_stream(common::ECHO, Some(Bytes::from_static(b"p:")))
        .await
        .unwrap();
    for i in 0..10u8 {
        tx.send(Bytes::from(vec![b'a' + i])).await.unwrap();
        let got = rx.recv().await.unwrap().unwrap();
        assert_eq!(&got[..], &[b'p', b':', b'a' + i]);
    }
    tx.close();
    assert!(rx.recv().await.is_none());
    let mut n = 5u32.to_be_bytes().to_vec();
    n.extend_from_slice(b"x");
    let (_tx, mut rx) = c
        .open_stream(common::FAIL_OR_COUNT, Some(Bytes::from(n)))
        .await
        .unwrap();
    let mut count = 0;
    while let Some(m) = rx.recv().await {
        m.unwrap();
        count += 1;
    }
    assert_eq!(count, 5);
    m1.shutdown(None).await;
    m2.shutdown(None).await;
}
