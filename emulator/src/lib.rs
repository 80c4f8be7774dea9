//! An in-memory Kubernetes API emulator, served over HTTP on loopback, for keyward's tests and
//! `keyward playground` (DESIGN §9). It exists because no kube-apiserver can run on the
//! machines keyward is built on; it must behave like one wherever keyward or kubectl depend
//! on it, and never agree with whatever a client sends.
#![forbid(unsafe_code)]

pub mod schema;
