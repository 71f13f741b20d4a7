//! `toolgate demo`: the gateway, an Atlassian-style upstream and simulated agents in one
//! process, offline, with the console attached.

pub mod upstream;
