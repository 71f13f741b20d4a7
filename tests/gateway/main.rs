//! Integration tests: the real `toolgate gateway` binary between real MCP peers
//! (the reference server-everything, the Python SDK's server and client).

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod bounds;
mod catalog;
mod cli;
mod console;
mod control;
mod decisions;
mod demo;
mod docs_examples;
mod events;
mod exactness;
mod grants;
mod holds;
mod identity;
mod long_wait;
mod policy_versions;
mod relay;
mod replay;
mod replicas;
mod shadow;
mod stdio;
mod stdio_upstream;
mod store;
mod strict_input;
mod tokens;
mod transport;
mod truth;
mod two_person;
