//! `toolgate token new`: mint a token and the config lines that accept it.

use base64::Engine as _;

use crate::gateway::identity::token_sha256;

/// A fresh token: `tg_` and 256 random bits. The prefix lets secret scanners and
/// people recognise a toolgate token when one leaks into a log or a repository.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!(
        "tg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What `toolgate token new NAME` prints: the token once, then the lines for the config,
/// which hold only its hash.
pub fn describe_new_token(name: &str, token: &str, issued: &str) -> String {
    format!(
        "# The token, shown once. Give it to the agent; toolgate keeps only its hash.\n\
         token = \"{token}\"\n\
         \n\
         # Paste into the gateway config (add groups, expires and owner as needed):\n\
         [[identity]]\n\
         name = {name:?}\n\
         kind = \"api_token\"\n\
         token_sha256 = \"{hash}\"\n\
         issued = \"{issued}\"\n",
        hash = token_sha256(token),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert!(a.starts_with("tg_") && a.len() == 3 + 43, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn printed_hash_is_the_sha256_of_the_printed_token() {
        let out = describe_new_token("ci-bot", "tg_abc", "2026-11-26T18:00:00Z");
        assert!(out.contains("token = \"tg_abc\"\n"));
        assert!(out.contains(&format!("token_sha256 = \"{}\"\n", token_sha256("tg_abc"))));
        assert!(out.contains("issued = \"2026-11-26T18:00:00Z\"\n"));
    }
}
