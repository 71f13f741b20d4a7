//! The tool catalog: what each upstream's `tools/list` says, learned on the way back.
//!
//! A tool's identity for review purposes is the SHA-256 of the RFC 8785 canonical JSON
//! of `{name, title, description, annotations, inputSchema}`: fields an era adds or a
//! server reorders do not change it, and any change to what the model is told does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::mcp::{self, ParamHeader};
use super::store::{ListedTool, Store, StoreError, WriteOp};
use crate::api::{EventBody, Risk};
use crate::config::{RiskSeed, UpstreamConfig};

/// The fields of a tool definition that the hash covers.
const DEFINITION_FIELDS: [&str; 5] = ["name", "title", "description", "annotations", "inputSchema"];

/// A tool definition as one listing gave it.
#[derive(Debug, Clone)]
pub struct ToolDefinition {
    pub name: String,
    pub definition: Map<String, Value>,
    pub canonical: String,
    pub sha256: String,
}

impl ToolDefinition {
    /// Reads one entry of a `tools/list` result; `None` when it has no string name.
    pub fn from_listing(tool: &Value) -> Option<Self> {
        let obj = tool.as_object()?;
        let name = obj.get("name")?.as_str()?.to_owned();
        // An absent field and a null one mean the same thing, so both hash the same.
        let definition: Map<String, Value> = DEFINITION_FIELDS
            .iter()
            .filter_map(|&k| {
                obj.get(k)
                    .filter(|v| !v.is_null())
                    .map(|v| (k.to_owned(), v.clone()))
            })
            .collect();
        let canonical = serde_jcs::to_string(&definition).ok()?;
        let sha256 = hex::encode(Sha256::digest(canonical.as_bytes()));
        Some(Self {
            name,
            definition,
            canonical,
            sha256,
        })
    }

    pub fn annotations(&self) -> Option<&Map<String, Value>> {
        self.definition
            .get("annotations")
            .and_then(Value::as_object)
    }

    fn str_field(&self, key: &str) -> Option<&str> {
        self.definition.get(key).and_then(Value::as_str)
    }
}

/// The class a tool starts with, as the MCP spec's annotation defaults imply. Hints
/// from an untrusted upstream say nothing, so its tools start unclassified.
pub fn starting_risk(annotations: Option<&Map<String, Value>>, trust_annotations: bool) -> Risk {
    let Some(a) = annotations.filter(|_| trust_annotations) else {
        return Risk::Unclassified;
    };
    if a.get("readOnlyHint") == Some(&Value::Bool(true)) {
        Risk::Read
    } else if a.get("destructiveHint") == Some(&Value::Bool(false)) {
        Risk::Write
    } else {
        Risk::Destructive
    }
}

/// A guess from the tool's name, shown to operators as a suggestion only.
pub fn suggest_risk(name: &str) -> Risk {
    const DESTRUCTIVE: &[&str] = &[
        "delete",
        "remove",
        "purge",
        "force",
        "drop",
        "destroy",
        "wipe",
        "truncate",
        "erase",
        "revoke",
        "rewrite",
        "reset",
        "kill",
        "terminate",
    ];
    const WRITE: &[&str] = &[
        "create",
        "update",
        "add",
        "set",
        "edit",
        "put",
        "post",
        "write",
        "comment",
        "transition",
        "assign",
        "move",
        "rename",
        "upload",
        "send",
        "merge",
        "publish",
        "approve",
        "trigger",
        "toggle",
        "insert",
        "patch",
        "modify",
        "start",
        "run",
        "execute",
    ];
    const READ: &[&str] = &[
        "get", "list", "search", "read", "fetch", "find", "query", "describe", "show", "view",
        "lookup", "count", "browse", "echo", "status", "info",
    ];
    let words = split_words(name);
    let has = |set: &[&str]| words.iter().any(|w| set.contains(&w.as_str()));
    if has(DESTRUCTIVE) {
        Risk::Destructive
    } else if has(WRITE) {
        Risk::Write
    } else if has(READ) {
        Risk::Read
    } else {
        Risk::Unclassified
    }
}

/// `getJiraIssue`, `get_jira_issue` and `get-jira-issue` all give `get jira issue`.
fn split_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// What the hot path needs to know about a tool, without touching the store.
#[derive(Debug, Clone)]
pub struct KnownTool {
    pub sha256: Option<String>,
    pub risk: Risk,
    pub param_headers: Option<Vec<ParamHeader>>,
}

/// Upstream name → tool name → what is known, so a lookup allocates nothing.
type ToolMap = HashMap<String, HashMap<String, Arc<KnownTool>>>;

/// The in-memory catalog and risk table, loaded from the store at start and kept
/// current by listings and edits. The store is the truth; this is its hot-path copy.
pub struct Catalog {
    store: Store,
    tools: RwLock<ToolMap>,
    /// Every write (a listing learned, an edit, a seed) commits and updates the copy
    /// above as one step, one at a time: two concurrent writes to a tool cannot leave in
    /// memory a class other than the one stored last.
    writes: tokio::sync::Mutex<()>,
}

impl Catalog {
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let tools = Self::read(&store).await?;
        Ok(Self {
            store,
            tools: RwLock::new(tools),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Reads the catalog from the store again, as another replica left it. Taken as a
    /// write, so an edit made here meanwhile lands in memory before it is read over.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_write_at_a_time = self.writes.lock().await;
        let tools = Self::read(&self.store).await?;
        *self.tools.write().expect("catalog lock") = tools;
        Ok(())
    }

    async fn read(store: &Store) -> Result<ToolMap, StoreError> {
        let mut tools: ToolMap = HashMap::new();
        for t in store.tools().await? {
            let param_headers = t
                .input_schema
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .and_then(|s: Value| mcp::declared_param_headers(&s));
            tools.entry(t.upstream).or_default().insert(
                t.name,
                Arc::new(KnownTool {
                    sha256: t.definition_sha256,
                    risk: t.risk,
                    param_headers,
                }),
            );
        }
        Ok(tools)
    }

    pub fn get(&self, upstream: &str, tool: &str) -> Option<Arc<KnownTool>> {
        self.tools
            .read()
            .expect("catalog lock")
            .get(upstream)
            .and_then(|m| m.get(tool))
            .cloned()
    }

    /// How many tools an upstream has in the catalog.
    pub fn tool_count(&self, upstream: &str) -> usize {
        self.tools
            .read()
            .expect("catalog lock")
            .get(upstream)
            .map_or(0, HashMap::len)
    }

    /// The class a call to this tool is decided with: stored, seeded, or unclassified
    /// for a tool nobody has listed or seeded. A call is never refused as unknown.
    pub fn risk(&self, upstream: &str, tool: &str) -> Risk {
        self.get(upstream, tool)
            .map_or(Risk::Unclassified, |t| t.risk)
    }

    fn put(&self, upstream: &str, tool: &str, known: KnownTool) {
        self.tools
            .write()
            .expect("catalog lock")
            .entry(upstream.to_owned())
            .or_default()
            .insert(tool.to_owned(), Arc::new(known));
    }

    /// An operator's class for a tool. The next call is decided with it; nothing is
    /// recompiled. Returns the `risk.changed` event.
    pub async fn set_risk(
        &self,
        upstream: &str,
        tool: &str,
        risk: Risk,
        expected_version: Option<u64>,
        by: &str,
        note: Option<String>,
    ) -> Result<crate::api::Event, StoreError> {
        // An operator waits on this: a long listing being learned counts against the
        // same deadline as the commit, rather than stalling the edit without end.
        let _one_write_at_a_time = tokio::time::timeout(self.store.timeout(), self.writes.lock())
            .await
            .map_err(|_| StoreError::Timeout)?;
        let committed = self
            .store
            .write_in_time(WriteOp::SetRisk {
                upstream: upstream.to_owned(),
                tool: tool.to_owned(),
                risk,
                expected_version,
                by: by.to_owned(),
                note,
            })
            .await?;
        let known = self.get(upstream, tool);
        self.put(
            upstream,
            tool,
            KnownTool {
                sha256: known.as_ref().and_then(|k| k.sha256.clone()),
                risk,
                param_headers: known.and_then(|k| k.param_headers.clone()),
            },
        );
        Ok(committed
            .events
            .into_iter()
            .next()
            .expect("a risk edit commits an event"))
    }

    /// Stores the `[[risk]]` seeds where nobody has chosen a class yet.
    pub async fn seed(&self, seeds: &[RiskSeed]) -> Result<(), StoreError> {
        let _one_write_at_a_time = self.writes.lock().await;
        for seed in seeds {
            let committed = self
                .store
                .write(WriteOp::SeedRisk {
                    upstream: seed.upstream.clone(),
                    tool: seed.tool.clone(),
                    risk: seed.risk,
                    suggested: suggest_risk(&seed.tool),
                })
                .await?;
            let known = self.get(&seed.upstream, &seed.tool);
            self.put(
                &seed.upstream,
                &seed.tool,
                KnownTool {
                    sha256: known.as_ref().and_then(|k| k.sha256.clone()),
                    risk: committed.risk.unwrap_or(seed.risk),
                    param_headers: known.and_then(|k| k.param_headers.clone()),
                },
            );
        }
        Ok(())
    }

    /// Learns from one page of a `tools/list` result. Unchanged tools cost no write.
    pub async fn learn(
        &self,
        upstream: &UpstreamConfig,
        listed: &[Value],
    ) -> Result<usize, StoreError> {
        let _one_write_at_a_time = self.writes.lock().await;
        let mut recorded = 0;
        for entry in listed {
            let Some(def) = ToolDefinition::from_listing(entry) else {
                tracing::warn!(upstream = %upstream.name, "tools/list entry without a string name ignored");
                continue;
            };
            // No call can name it (calls are refused past this length), so it is not kept.
            if def.name.len() > mcp::MAX_TOOL_NAME_BYTES {
                tracing::warn!(upstream = %upstream.name, bytes = def.name.len(),
                    "tools/list entry with a name over {} bytes ignored", mcp::MAX_TOOL_NAME_BYTES);
                continue;
            }
            let known = self.get(&upstream.name, &def.name);
            if known.as_ref().and_then(|k| k.sha256.as_deref()) == Some(def.sha256.as_str()) {
                continue;
            }
            let starting = starting_risk(def.annotations(), upstream.trust_annotations);
            let listed = ListedTool {
                upstream: upstream.name.clone(),
                name: def.name.clone(),
                title: def.str_field("title").map(String::from),
                description: def.str_field("description").map(String::from),
                annotations: def.definition.get("annotations").cloned(),
                input_schema: def.definition.get("inputSchema").cloned(),
                canonical_definition: def.canonical.clone(),
                sha256: def.sha256.clone(),
                suggested_risk: suggest_risk(&def.name),
                starting_risk: starting,
                starting_source: if starting == Risk::Unclassified {
                    "default"
                } else {
                    "annotations"
                },
                on_change: upstream.on_tool_change,
            };
            let committed = self
                .store
                .write(WriteOp::ListedTool(Box::new(listed)))
                .await?;
            for event in &committed.events {
                if let EventBody::ToolChanged { tool, .. } = &event.body {
                    tracing::warn!(upstream = %tool.upstream, tool = %super::escape::Escaped(&tool.name), risk = %tool.risk,
                        "tool definition changed");
                }
            }
            self.put(
                &upstream.name,
                &def.name,
                KnownTool {
                    sha256: Some(def.sha256.clone()),
                    risk: committed.risk.unwrap_or(starting),
                    param_headers: def
                        .definition
                        .get("inputSchema")
                        .and_then(mcp::declared_param_headers),
                },
            );
            recorded += 1;
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_ignores_key_order_extra_fields_and_nulls() {
        let a = ToolDefinition::from_listing(&json!({
            "name": "echo", "description": "Echoes", "inputSchema": {"type": "object", "properties": {"m": {"type": "string"}}},
            "annotations": {"readOnlyHint": true}
        }))
        .unwrap();
        let b = ToolDefinition::from_listing(&json!({
            "annotations": {"readOnlyHint": true}, "title": null, "execution": {"taskSupport": "forbidden"},
            "inputSchema": {"properties": {"m": {"type": "string"}}, "type": "object"},
            "description": "Echoes", "name": "echo", "_meta": {"x": 1}
        }))
        .unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(
            a.canonical,
            r#"{"annotations":{"readOnlyHint":true},"description":"Echoes","inputSchema":{"properties":{"m":{"type":"string"}},"type":"object"},"name":"echo"}"#
        );
    }

    #[test]
    fn a_changed_annotation_changes_the_hash() {
        let a = ToolDefinition::from_listing(
            &json!({"name": "x", "annotations": {"destructiveHint": false}}),
        )
        .unwrap();
        let b = ToolDefinition::from_listing(
            &json!({"name": "x", "annotations": {"destructiveHint": true}}),
        )
        .unwrap();
        assert_ne!(a.sha256, b.sha256);
    }

    #[test]
    fn starting_risk_follows_spec_defaults_only_when_trusted() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        let ro = obj(json!({"readOnlyHint": true}));
        let nd = obj(json!({"destructiveHint": false}));
        let none = obj(json!({}));
        assert_eq!(starting_risk(Some(&ro), true), Risk::Read);
        assert_eq!(starting_risk(Some(&nd), true), Risk::Write);
        assert_eq!(starting_risk(Some(&none), true), Risk::Destructive);
        assert_eq!(starting_risk(None, true), Risk::Unclassified);
        assert_eq!(starting_risk(Some(&ro), false), Risk::Unclassified);
    }

    #[test]
    fn names_suggest_a_class() {
        assert_eq!(suggest_risk("getJiraIssue"), Risk::Read);
        assert_eq!(suggest_risk("search_issues"), Risk::Read);
        assert_eq!(suggest_risk("create-issue"), Risk::Write);
        assert_eq!(suggest_risk("deleteBranch"), Risk::Destructive);
        assert_eq!(suggest_risk("force_push"), Risk::Destructive);
        assert_eq!(suggest_risk("frobnicate"), Risk::Unclassified);
        // A word inside another word is not that word.
        assert_eq!(suggest_risk("getsetter"), Risk::Unclassified);
    }
}
