//! Loopback smoke test.
mod common;

use std::time::Duration;

use bytes::Bytes;
use grid_smol::{Manager, Options};

#[test]
fn two_nodes_echo() {
    async_io::block_on(async {
        let l1 = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h1 = format!("http://{}", l1.local_addr().unwrap());
        let h2 = format!("http://{}", l2.local_addr().unwrap());
        let hosts = [h1.clone(), h2.clone()];
        let m1 = Manager::new(grid_smol::Smol, &h1, &hosts, Options::default()).unwrap();
        let m2 = Manager::new(grid_smol::Smol, &h2, &hosts, Options::default()).unwrap();
        common::register(&m1).unwrap();
        common::register(&m2).unwrap();
        grid_smol::spawn(grid_smol::serve(m1.clone(), l1)).detach();
        grid_smol::spawn(grid_smol::serve(m2.clone(), l2)).detach();
        m1.start();
        m2.start();
        let c = m1.connection(&h2).unwrap();
        c.wait_for_connect(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            c.request(common::ECHO, Bytes::from_static(b"hello"))
                .await
                .unwrap(),
            "hello"
        );
        let (mut tx, mut rx) = c
            .open_stream(common::ECHO, Some(Bytes::from_static(b"p:")))
            .await
            .unwrap();
        for i in 0..10u8 {
            tx.send(Bytes::from(vec![b'a' + i])).await.unwrap();
            assert_eq!(
                &rx.recv().await.unwrap().unwrap()[..],
                &[b'p', b':', b'a' + i]
            );
        }
        tx.close();
        assert!(rx.recv().await.is_none());
        m1.shutdown(None).await;
        m2.shutdown(None).await;
    });
}
