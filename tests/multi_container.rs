//! `config/multi-container.toml` as shipped (its ports moved to free ones, its Redis to
//! one the test starts): a user on one container is notified through another, and a
//! target disconnect ends that container's tunnels, as README's walkthrough shows.

mod support;

use std::net::SocketAddr;

use fastwebsockets::FragmentCollector;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use support::redis::RedisServer;
use support::*;

/// Ports nothing listens on right now.
async fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// `POST path` with `body` to `addr`: status and body.
async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw_exchange(stream, request.as_bytes()).await;
    (status_of(&response), body_of(&response).to_string())
}

#[tokio::test]
async fn the_shipped_picture_notifies_across_containers_and_disconnects_one() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/multi-container.toml"
    ))
    .unwrap();
    let ports = free_ports(3).await;
    let mut text = shipped
        .replace("port = 8080", "port = 0")
        .replace("127.0.0.1:9900", "127.0.0.1:0")
        .replace("redis://127.0.0.1:6379", &redis.url());
    for (i, port) in ports.iter().enumerate() {
        text = text.replace(
            &format!("127.0.0.1:900{}", i + 1),
            &format!("127.0.0.1:{port}"),
        );
    }
    let pki = Pki::new();
    let proxy = start_proxy(&pki, &text).await;
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(proxy.backends().len(), 3);

    // Alice connects through the load balancer; wait until every container is
    // subscribed, then notify her through a container she is not on.
    let tcp = TcpStream::connect(proxy.listener_addr(0)).await.unwrap();
    let mut alice = FragmentCollector::new(ws_handshake(tcp, "localhost", "/ws?user=alice").await);
    let hello = next_json(&mut alice).await;
    let on = proxy
        .backends()
        .iter()
        .position(|b| b.id() == hello["backend"])
        .expect("the hello names a container");
    let other = proxy.backends()[(on + 1) % 3].local_addr();
    let answer = within("a published notification", async {
        loop {
            let (status, body) = post(other, "/notify/alice", "report ready").await;
            assert_eq!(status, 202, "{body}");
            let answer: Value = serde_json::from_str(&body).unwrap();
            if answer["published"] == true {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(answer["delivered"], 0, "{answer}");
    let got = next_json(&mut alice).await;
    assert_eq!(got["type"], "notify");
    assert_eq!(got["data"], "report ready");

    // The container Alice is on stops: every tunnel to it ends with a FIN.
    let target = proxy.backends()[on].local_addr();
    let path = format!("/target-groups/app/targets/{target}/disconnect?mode=target_close");
    let stream = TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let response = raw_exchange(stream, request.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(read_until_end(&mut alice).await, WsEnd::Abnormal1006);
    eventually("the tunnel gone", || proxy.tunnels().is_empty()).await;
}
