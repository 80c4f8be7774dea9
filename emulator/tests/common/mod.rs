//! Steps the emulator's client-level suites share.
#![allow(dead_code)]

use keyward_emulator::Emulator;

/// A fresh emulator and a kube-rs client for it.
pub async fn start() -> (Emulator, kube::Client) {
    let emulator = Emulator::start().await.expect("emulator starts");
    let client = emulator.client();
    (emulator, client)
}

/// The Status of an error the API server answered; any other error fails the test.
pub fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
