//! A handshake-era child asking a 2026-07-28 client something mid-call (sampling,
//! elicitation, roots): in that era a server asks by answering `input_required`, and the
//! client calls again with its answers.
//!
//! The bridge answers the client's request with `resultType: "input_required"`, the
//! child's request as the one input request, and a `requestState` of its own
//! (`tgs1.` and 16 random bytes); the child's call waits, its child kept. The client's
//! call again (the same tool and arguments, decided again by the gateway) carries the
//! state and its answer: the answer is written to the child as its response, and the
//! rest of the call (more questions, progress, the result, with the new request's id)
//! goes on the new request. A state is this replica's, this identity's, and good once,
//! for `WAIT`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::bridge::Out;

const STATE_PREFIX: &str = "tgs1.";
/// The key of the one input request in `inputRequests`.
const INPUT_KEY: &str = "input";
/// How long a call waits for its client to call again with an answer (its child is
/// held meanwhile).
pub const WAIT: Duration = Duration::from_secs(120);
/// The most calls of one identity waiting so at once: past it, the child's request is
/// refused at once, so that calls whose clients never come back cannot hold the
/// identity's processes.
pub const MAX_WAITING_PER_IDENTITY: usize = 2;

/// What a call again brings to the waiting call: where the rest goes, its id, and the
/// client's answer to the child's request.
pub struct Resume {
    pub out: mpsc::Sender<Out>,
    pub id: Value,
    pub answer: Value,
}

struct Waiting {
    principal: String,
    /// The call's method, tool and arguments, which the call again must repeat.
    method: Value,
    name: Value,
    arguments: Value,
    resume: oneshot::Sender<Resume>,
}

/// The calls waiting for their clients' answers, by state.
#[derive(Default)]
pub struct Suspensions(Mutex<HashMap<String, Waiting>>);

impl Suspensions {
    /// Makes a state for `call` (its client's request) and the receiver its call again
    /// arrives on; `None` when this identity has `MAX_WAITING_PER_IDENTITY` calls
    /// waiting already.
    pub fn suspend(
        &self,
        principal: &str,
        call: &Value,
    ) -> Option<(String, oneshot::Receiver<Resume>)> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the system's random source");
        let state = format!("{STATE_PREFIX}{}", hex::encode(bytes));
        let (resume, resumed) = oneshot::channel();
        let mut waiting = self.0.lock().expect("suspensions");
        let mine = waiting
            .values()
            .filter(|w| w.principal == principal)
            .count();
        if mine >= MAX_WAITING_PER_IDENTITY {
            return None;
        }
        waiting.insert(
            state.clone(),
            Waiting {
                principal: principal.to_owned(),
                method: call.get("method").cloned().unwrap_or(Value::Null),
                name: call.pointer("/params/name").cloned().unwrap_or(Value::Null),
                arguments: call
                    .pointer("/params/arguments")
                    .cloned()
                    .unwrap_or(Value::Null),
                resume,
            },
        );
        Some((state, resumed))
    }

    /// Calls waiting now.
    pub fn count(&self) -> usize {
        self.0.lock().expect("suspensions").len()
    }

    /// Whether `again` (as `principal`) continues a waiting call: its state, its
    /// identity, its method, tool and arguments.
    pub fn continues(&self, principal: &str, again: &Value) -> bool {
        let Some(state) = state_of(again) else {
            return false;
        };
        self.0
            .lock()
            .expect("suspensions")
            .get(state)
            .is_some_and(|w| w.principal == principal && w.repeats(again))
    }

    pub fn forget(&self, state: &str) {
        self.0.lock().expect("suspensions").remove(state);
    }

    /// Hands a call again to its waiting call; why not, for the client.
    pub fn resume(
        &self,
        state: &str,
        principal: &str,
        again: &Value,
        out: mpsc::Sender<Out>,
    ) -> Result<(), String> {
        let mut waiting = self.0.lock().expect("suspensions");
        let known = waiting.get(state).is_some_and(|w| w.principal == principal);
        if !known {
            return Err("toolgate: this requestState is not known here (it was used, it expired, or another replica made it); call again without it".into());
        }
        if !waiting[state].repeats(again) {
            return Err("toolgate: a call with a requestState must repeat the call it continues (the same method, tool and arguments)".into());
        }
        let Some(answer) = again
            .pointer(&format!("/params/inputResponses/{INPUT_KEY}"))
            .cloned()
        else {
            return Err(format!(
                "toolgate: the call again needs inputResponses.{INPUT_KEY}, the answer to the server's request"
            ));
        };
        let w = waiting.remove(state).expect("looked up");
        let id = again.get("id").cloned().unwrap_or(Value::Null);
        w.resume
            .send(Resume { out, id, answer })
            .map_err(|_| "toolgate: the call this requestState continues has ended".to_owned())
    }
}

impl Waiting {
    fn repeats(&self, again: &Value) -> bool {
        again.get("method") == Some(&self.method)
            && again.pointer("/params/name").unwrap_or(&Value::Null) == &self.name
            && again.pointer("/params/arguments").unwrap_or(&Value::Null) == &self.arguments
    }
}

/// The `requestState` of a call again, if it is one of the bridge's.
pub fn state_of(message: &Value) -> Option<&str> {
    message
        .pointer("/params/requestState")
        .and_then(Value::as_str)
        .filter(|s| s.starts_with(STATE_PREFIX))
}

/// The client's answer for now: the child's request, as the input it needs.
pub fn input_required(id: &Value, asked: &Value, state: &str) -> Vec<u8> {
    let request = json!({"method": asked["method"], "params": asked.get("params").cloned().unwrap_or_else(|| json!({}))});
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": {
        "resultType": "input_required",
        "inputRequests": {INPUT_KEY: request},
        "requestState": state,
    }}))
    .expect("a JSON value serializes")
}

/// The child's request answered with what the client said.
pub fn response_to(asked: &Value, answer: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": asked["id"], "result": answer}))
        .expect("a JSON value serializes")
}

/// The child's request answered with an error: nobody will answer it.
pub fn refusal_to(asked: &Value, text: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"jsonrpc": "2.0", "id": asked["id"], "error": {"code": -32603, "message": text}}),
    )
    .expect("a JSON value serializes")
}

/// An answer with the id of the request it now answers (a call again has its own).
pub fn with_id(answer: Vec<u8>, id: &Value) -> Vec<u8> {
    match serde_json::from_slice::<Value>(&answer) {
        Ok(mut value) if value.get("id") != Some(id) => {
            value["id"] = id.clone();
            serde_json::to_vec(&value).unwrap_or(answer)
        }
        _ => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "summarize", "arguments": args}})
    }

    #[test]
    fn a_state_continues_only_its_own_call_for_its_own_identity_once() {
        let waiting = Suspensions::default();
        let (state, mut resumed) = waiting
            .suspend("api_token:a", &call(json!({"text": "x"})))
            .unwrap();
        assert!(state.starts_with("tgs1.") && state.len() == 5 + 32);
        let mut again = call(json!({"text": "x"}));
        again["id"] = json!(2);
        again["params"]["requestState"] = json!(state);
        let (out, _rx) = mpsc::channel(1);
        // Another identity, another call, no answer: refused, and the call still waits.
        let err = waiting
            .resume(&state, "api_token:b", &again, out.clone())
            .unwrap_err();
        assert!(err.contains("not known here"), "{err}");
        let mut other = again.clone();
        other["params"]["arguments"]["text"] = json!("y");
        let err = waiting
            .resume(&state, "api_token:a", &other, out.clone())
            .unwrap_err();
        assert!(err.contains("must repeat the call"), "{err}");
        // Another method (one the gateway decides nothing of) with the same name and
        // arguments does not continue a tool call.
        let mut prompt = again.clone();
        prompt["method"] = json!("prompts/get");
        prompt["params"]["inputResponses"] = json!({"input": {}});
        assert!(!waiting.continues("api_token:a", &prompt));
        let err = waiting
            .resume(&state, "api_token:a", &prompt, out.clone())
            .unwrap_err();
        assert!(err.contains("same method"), "{err}");
        let err = waiting
            .resume(&state, "api_token:a", &again, out.clone())
            .unwrap_err();
        assert!(err.contains("inputResponses.input"), "{err}");
        again["params"]["inputResponses"] = json!({"input": {"role": "assistant"}});
        assert_eq!(state_of(&again), Some(state.as_str()));
        assert!(waiting.continues("api_token:a", &again));
        assert!(!waiting.continues("api_token:b", &again));
        waiting
            .resume(&state, "api_token:a", &again, out.clone())
            .unwrap();
        let resume = resumed.try_recv().unwrap();
        assert_eq!(resume.id, json!(2));
        assert_eq!(resume.answer, json!({"role": "assistant"}));
        // Good once.
        assert!(waiting.resume(&state, "api_token:a", &again, out).is_err());
    }

    #[test]
    fn the_childs_request_becomes_the_input_request_and_its_answer_its_response() {
        let asked = json!({"jsonrpc": "2.0", "id": 0, "method": "sampling/createMessage",
                           "params": {"maxTokens": 50}});
        let answer: Value =
            serde_json::from_slice(&input_required(&json!(7), &asked, "tgs1.ab")).unwrap();
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["result"]["resultType"], "input_required");
        assert_eq!(
            answer["result"]["inputRequests"]["input"],
            json!({"method": "sampling/createMessage", "params": {"maxTokens": 50}})
        );
        assert_eq!(answer["result"]["requestState"], "tgs1.ab");
        let response: Value =
            serde_json::from_slice(&response_to(&asked, json!({"content": 1}))).unwrap();
        assert_eq!(
            response,
            json!({"jsonrpc": "2.0", "id": 0, "result": {"content": 1}})
        );
        let moved: Value = serde_json::from_slice(&with_id(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec(),
            &json!(2),
        ))
        .unwrap();
        assert_eq!(moved["id"], 2);
    }
}

#[cfg(test)]
mod cap {
    use super::*;

    #[test]
    fn an_identity_has_at_most_two_calls_waiting() {
        let waiting = Suspensions::default();
        let call = json!({"method": "tools/call", "params": {"name": "t", "arguments": {}}});
        let _one = waiting.suspend("a", &call).unwrap();
        let _two = waiting.suspend("a", &call).unwrap();
        assert!(waiting.suspend("a", &call).is_none());
        assert!(waiting.suspend("b", &call).is_some());
        assert_eq!(waiting.count(), 3);
    }
}
