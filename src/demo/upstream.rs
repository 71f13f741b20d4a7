//! The demo's upstream: an Atlassian-style MCP server (Jira, Confluence, Bitbucket) on
//! the official Rust SDK, `rmcp`, speaking both protocol eras over Streamable HTTP.
//!
//! Its data is small and in memory, and the tools really change it: a created issue is
//! found by search, a deleted page is gone, a force-push moves a branch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

/// The tools, as `tools/list` shows them. Annotations are honest: what a tool does to
/// the data below is what its hints say. `bitbucket_run_pipeline` has none, as many
/// real tools do not, so it shows up as unclassified.
pub fn tool_definitions() -> Vec<Tool> {
    let string = |description: &str| json!({"type": "string", "description": description});
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    let read = json!({"readOnlyHint": true, "openWorldHint": false});
    let write = json!({"readOnlyHint": false, "destructiveHint": false, "openWorldHint": false});
    let destructive =
        json!({"readOnlyHint": false, "destructiveHint": true, "openWorldHint": false});
    let defs = json!([
        {"name": "jira_search_issues", "title": "Search Jira issues",
         "description": "Find issues by project, status and words in the summary.",
         "inputSchema": object(json!({"projectKey": string("Project key, such as OPS"),
             "text": string("Words to find in the summary"),
             "status": {"type": "string", "enum": ["To Do", "In Progress", "Done"]}}), &[]),
         "annotations": read},
        {"name": "jira_get_issue", "title": "Get a Jira issue",
         "description": "One issue with its status and comments.",
         "inputSchema": object(json!({"issueKey": string("Issue key, such as OPS-12")}), &["issueKey"]),
         "annotations": read},
        {"name": "jira_create_issue", "title": "Create a Jira issue",
         "description": "Creates an issue in a project and returns its key.",
         "inputSchema": object(json!({"projectKey": string("Project key"), "summary": string("One line"),
             "description": string("Details"), "issueType": {"type": "string", "enum": ["Task", "Bug", "Incident"]}}),
             &["projectKey", "summary"]),
         "annotations": write},
        {"name": "jira_transition_issue", "title": "Move a Jira issue through its workflow",
         "description": "Moves an issue to To Do, In Progress or Done.",
         "inputSchema": object(json!({"issueKey": string("Issue key"),
             "status": {"type": "string", "enum": ["To Do", "In Progress", "Done"]}}), &["issueKey", "status"]),
         "annotations": write},
        {"name": "jira_add_comment", "title": "Comment on a Jira issue",
         "description": "Adds a comment to an issue.",
         "inputSchema": object(json!({"issueKey": string("Issue key"), "body": string("The comment")}), &["issueKey", "body"]),
         "annotations": write},
        {"name": "jira_delete_issue", "title": "Delete a Jira issue",
         "description": "Deletes an issue and its comments for good.",
         "inputSchema": object(json!({"issueKey": string("Issue key")}), &["issueKey"]),
         "annotations": destructive},
        {"name": "confluence_search_pages", "title": "Search Confluence",
         "description": "Find pages by space and words in the title or body.",
         "inputSchema": object(json!({"spaceKey": string("Space key, such as ENG"), "text": string("Words to find")}), &[]),
         "annotations": read},
        {"name": "confluence_get_page", "title": "Get a Confluence page",
         "description": "One page with its body and version.",
         "inputSchema": object(json!({"pageId": string("Page id, such as 1001")}), &["pageId"]),
         "annotations": read},
        {"name": "confluence_update_page", "title": "Update a Confluence page",
         "description": "Replaces a page's body; the version goes up by one.",
         "inputSchema": object(json!({"pageId": string("Page id"), "body": string("The new body")}), &["pageId", "body"]),
         "annotations": write},
        {"name": "confluence_delete_page", "title": "Delete a Confluence page",
         "description": "Deletes a page for good.",
         "inputSchema": object(json!({"pageId": string("Page id")}), &["pageId"]),
         "annotations": destructive},
        {"name": "bitbucket_list_branches", "title": "List branches",
         "description": "Every branch of a repository with its head commit.",
         "inputSchema": object(json!({"repoSlug": string("Repository, such as payments-api")}), &["repoSlug"]),
         "annotations": read},
        {"name": "bitbucket_create_pull_request", "title": "Open a pull request",
         "description": "Opens a pull request from one branch into another.",
         "inputSchema": object(json!({"repoSlug": string("Repository"), "source": string("Source branch"),
             "destination": string("Target branch"), "title": string("Title")}), &["repoSlug", "source", "destination", "title"]),
         "annotations": write},
        {"name": "bitbucket_delete_branch", "title": "Delete a branch",
         "description": "Deletes a branch; commits only it had are lost.",
         "inputSchema": object(json!({"repoSlug": string("Repository"), "branch": string("Branch")}), &["repoSlug", "branch"]),
         "annotations": destructive},
        {"name": "bitbucket_force_push", "title": "Force-push a branch",
         "description": "Points a branch at any commit, rewriting its history.",
         "inputSchema": object(json!({"repoSlug": string("Repository"), "branch": string("Branch"),
             "commit": string("The new head commit")}), &["repoSlug", "branch", "commit"]),
         "annotations": destructive},
        {"name": "bitbucket_run_pipeline", "title": "Run a pipeline",
         "description": "Starts the CI pipeline of a branch.",
         "inputSchema": object(json!({"repoSlug": string("Repository"), "branch": string("Branch")}), &["repoSlug", "branch"])}
    ]);
    serde_json::from_value(defs).expect("the demo tool definitions are valid")
}

#[derive(Debug, Clone, serde::Serialize)]
struct Issue {
    key: String,
    summary: String,
    status: String,
    #[serde(rename = "issueType")]
    issue_type: String,
    comments: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Page {
    id: String,
    space: String,
    title: String,
    body: String,
    version: u32,
}

/// Everything the tools read and change.
#[derive(Debug, Default)]
pub struct Data {
    issues: BTreeMap<String, Issue>,
    pages: BTreeMap<String, Page>,
    /// `repo` → `branch` → head commit.
    branches: BTreeMap<String, BTreeMap<String, String>>,
    pull_requests: u32,
    pipelines: u32,
}

impl Data {
    pub fn sample() -> Data {
        let mut data = Data::default();
        let issues = [
            (
                "OPS",
                "Pager rotation misses the Sunday slot",
                "To Do",
                "Bug",
            ),
            (
                "OPS",
                "Rotate the staging database credentials",
                "In Progress",
                "Task",
            ),
            ("OPS", "Disk alert on build agents", "Done", "Incident"),
            (
                "PAY",
                "Refunds over 10k need a second approver",
                "To Do",
                "Task",
            ),
            (
                "PAY",
                "Settlement job retries forever on 502",
                "In Progress",
                "Bug",
            ),
            ("WEB", "Checkout button jumps on mobile", "To Do", "Bug"),
        ];
        for (project, summary, status, issue_type) in issues {
            data.add_issue(project, summary, status, issue_type);
        }
        let pages = [
            (
                "1001",
                "ENG",
                "Service ownership",
                "Who owns what, and who to page.",
            ),
            (
                "1002",
                "ENG",
                "Release checklist",
                "Tag, build, canary, then roll out.",
            ),
            (
                "1003",
                "OPS",
                "Incident runbook",
                "Declare, assign a lead, open a channel.",
            ),
            (
                "1004",
                "OPS",
                "Database failover",
                "Promote the replica, then repoint.",
            ),
            (
                "1005",
                "HR",
                "On-call compensation",
                "Paid per week on call.",
            ),
        ];
        for (id, space, title, body) in pages {
            data.pages.insert(
                id.into(),
                Page {
                    id: id.into(),
                    space: space.into(),
                    title: title.into(),
                    body: body.into(),
                    version: 1,
                },
            );
        }
        for (repo, branches) in [
            (
                "payments-api",
                &["main", "release/2.4", "feature/refund-approval"][..],
            ),
            ("web-frontend", &["main", "feature/checkout-fix"][..]),
            ("infra", &["main", "hotfix/disk-alerts"][..]),
        ] {
            let heads = branches
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    (
                        (*b).to_owned(),
                        format!("{:07x}", 0x3a9f21 + i * 0x1111 + repo.len()),
                    )
                })
                .collect();
            data.branches.insert(repo.into(), heads);
        }
        data
    }

    fn add_issue(
        &mut self,
        project: &str,
        summary: &str,
        status: &str,
        issue_type: &str,
    ) -> String {
        let n = self
            .issues
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{project}-")))
            .filter_map(|n| n.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let key = format!("{project}-{n}");
        self.issues.insert(
            key.clone(),
            Issue {
                key: key.clone(),
                summary: summary.into(),
                status: status.into(),
                issue_type: issue_type.into(),
                comments: Vec::new(),
            },
        );
        key
    }

    /// Runs one tool. `Err` is a tool error the caller sees with `isError`.
    pub fn call(&mut self, tool: &str, args: &Map<String, Value>) -> Result<Value, String> {
        let arg = |name: &str| -> Result<String, String> {
            args.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("missing argument {name:?}"))
        };
        let opt = |name: &str| {
            args.get(name)
                .and_then(Value::as_str)
                .map(str::to_lowercase)
        };
        match tool {
            "jira_search_issues" => {
                let project = opt("projectKey").map(|p| p.to_uppercase());
                let text = opt("text");
                let status = opt("status");
                let found: Vec<&Issue> = self
                    .issues
                    .values()
                    .filter(|i| {
                        project
                            .as_ref()
                            .is_none_or(|p| i.key.starts_with(&format!("{p}-")))
                    })
                    .filter(|i| {
                        text.as_ref()
                            .is_none_or(|t| i.summary.to_lowercase().contains(t))
                    })
                    .filter(|i| {
                        status
                            .as_ref()
                            .is_none_or(|s| i.status.to_lowercase() == *s)
                    })
                    .collect();
                Ok(json!({"total": found.len(), "issues": found}))
            }
            "jira_get_issue" => {
                let key = arg("issueKey")?;
                self.issues
                    .get(&key)
                    .map(|i| json!(i))
                    .ok_or_else(|| format!("issue {key} does not exist"))
            }
            "jira_create_issue" => {
                let project = arg("projectKey")?.to_uppercase();
                if !["OPS", "PAY", "WEB"].contains(&project.as_str()) {
                    return Err(format!("project {project} does not exist (OPS, PAY, WEB)"));
                }
                let issue_type = opt("issueType").map_or("Task".to_owned(), |t| {
                    let mut c = t.chars();
                    c.next()
                        .map(|f| f.to_uppercase().chain(c).collect())
                        .unwrap_or_default()
                });
                let key = self.add_issue(&project, &arg("summary")?, "To Do", &issue_type);
                Ok(json!({"created": key}))
            }
            "jira_transition_issue" => {
                let key = arg("issueKey")?;
                let status = arg("status")?;
                if !["To Do", "In Progress", "Done"].contains(&status.as_str()) {
                    return Err(format!(
                        "{status:?} is not a status (To Do, In Progress, Done)"
                    ));
                }
                let issue = self
                    .issues
                    .get_mut(&key)
                    .ok_or_else(|| format!("issue {key} does not exist"))?;
                let from = std::mem::replace(&mut issue.status, status.clone());
                Ok(json!({"issue": key, "from": from, "to": status}))
            }
            "jira_add_comment" => {
                let key = arg("issueKey")?;
                let body = arg("body")?;
                let issue = self
                    .issues
                    .get_mut(&key)
                    .ok_or_else(|| format!("issue {key} does not exist"))?;
                issue.comments.push(body);
                Ok(json!({"issue": key, "comments": issue.comments.len()}))
            }
            "jira_delete_issue" => {
                let key = arg("issueKey")?;
                self.issues
                    .remove(&key)
                    .map(|_| json!({"deleted": key}))
                    .ok_or_else(|| format!("issue {key} does not exist"))
            }
            "confluence_search_pages" => {
                let space = opt("spaceKey").map(|s| s.to_uppercase());
                let text = opt("text");
                let found: Vec<Value> = self
                    .pages
                    .values()
                    .filter(|p| space.as_ref().is_none_or(|s| p.space == *s))
                    .filter(|p| {
                        text.as_ref().is_none_or(|t| {
                            p.title.to_lowercase().contains(t) || p.body.to_lowercase().contains(t)
                        })
                    })
                    .map(|p| json!({"id": p.id, "space": p.space, "title": p.title}))
                    .collect();
                Ok(json!({"total": found.len(), "pages": found}))
            }
            "confluence_get_page" => {
                let id = arg("pageId")?;
                self.pages
                    .get(&id)
                    .map(|p| json!(p))
                    .ok_or_else(|| format!("page {id} does not exist"))
            }
            "confluence_update_page" => {
                let id = arg("pageId")?;
                let page = self
                    .pages
                    .get_mut(&id)
                    .ok_or_else(|| format!("page {id} does not exist"))?;
                page.body = arg("body")?;
                page.version += 1;
                Ok(json!({"page": id, "version": page.version}))
            }
            "confluence_delete_page" => {
                let id = arg("pageId")?;
                self.pages
                    .remove(&id)
                    .map(|p| json!({"deleted": id, "title": p.title}))
                    .ok_or_else(|| format!("page {id} does not exist"))
            }
            "bitbucket_list_branches" => {
                let repo = arg("repoSlug")?;
                self.branches
                    .get(&repo)
                    .map(|b| json!({"repo": repo, "branches": b}))
                    .ok_or_else(|| format!("repository {repo} does not exist"))
            }
            "bitbucket_create_pull_request" => {
                let repo = arg("repoSlug")?;
                let branches = self
                    .branches
                    .get(&repo)
                    .ok_or_else(|| format!("repository {repo} does not exist"))?;
                for b in [arg("source")?, arg("destination")?] {
                    if !branches.contains_key(&b) {
                        return Err(format!("branch {b} does not exist in {repo}"));
                    }
                }
                self.pull_requests += 1;
                Ok(json!({"repo": repo, "pullRequest": self.pull_requests, "title": arg("title")?}))
            }
            "bitbucket_delete_branch" => {
                let repo = arg("repoSlug")?;
                let branch = arg("branch")?;
                let branches = self
                    .branches
                    .get_mut(&repo)
                    .ok_or_else(|| format!("repository {repo} does not exist"))?;
                branches
                    .remove(&branch)
                    .map(|head| json!({"repo": repo, "deleted": branch, "head": head}))
                    .ok_or_else(|| format!("branch {branch} does not exist in {repo}"))
            }
            "bitbucket_force_push" => {
                let repo = arg("repoSlug")?;
                let branch = arg("branch")?;
                let commit = arg("commit")?;
                let head = self
                    .branches
                    .get_mut(&repo)
                    .and_then(|b| b.get_mut(&branch))
                    .ok_or_else(|| format!("branch {branch} does not exist in {repo}"))?;
                let before = std::mem::replace(head, commit.clone());
                Ok(json!({"repo": repo, "branch": branch, "from": before, "to": commit}))
            }
            "bitbucket_run_pipeline" => {
                let repo = arg("repoSlug")?;
                let branch = arg("branch")?;
                if !self
                    .branches
                    .get(&repo)
                    .is_some_and(|b| b.contains_key(&branch))
                {
                    return Err(format!("branch {branch} does not exist in {repo}"));
                }
                self.pipelines += 1;
                Ok(
                    json!({"repo": repo, "branch": branch, "pipeline": self.pipelines, "state": "started"}),
                )
            }
            other => Err(format!("no tool is named {other:?}")),
        }
    }
}

/// One server handler per session; they all share the data.
#[derive(Clone)]
pub struct Atlassian {
    data: Arc<Mutex<Data>>,
    tools: Arc<Vec<Tool>>,
}

impl Atlassian {
    pub fn new(data: Arc<Mutex<Data>>) -> Self {
        Self {
            data,
            tools: Arc::new(tool_definitions()),
        }
    }
}

impl ServerHandler for Atlassian {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "toolgate-demo-atlassian",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "A demo Jira, Confluence and Bitbucket. Projects OPS, PAY, WEB; spaces ENG, OPS, HR; \
                 repositories payments-api, web-frontend, infra.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("no tool is named {:?}", request.name),
                None,
            ));
        }
        let args = request.arguments.unwrap_or_default();
        let outcome = self
            .data
            .lock()
            .expect("demo data lock")
            .call(&request.name, &args);
        let result = match outcome {
            Ok(value) => CallToolResult::success(vec![ContentBlock::text(value.to_string())]),
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        };
        Ok(result.into())
    }
}

/// The sample server on stdin and stdout, until its client closes stdin.
pub async fn serve_stdio() -> anyhow::Result<()> {
    use rmcp::ServiceExt as _;
    let data = Arc::new(Mutex::new(Data::sample()));
    let running = Atlassian::new(data)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("the sample server did not start: {e}"))?;
    running.waiting().await?;
    Ok(())
}

/// The Streamable HTTP endpoint, for `/mcp`. `shutdown` closes its open streams.
pub fn service(
    data: Arc<Mutex<Data>>,
    shutdown: tokio_util::sync::CancellationToken,
) -> StreamableHttpService<Atlassian, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default();
    config.cancellation_token = shutdown;
    StreamableHttpService::new(
        move || Ok(Atlassian::new(data.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(data: &mut Data, tool: &str, args: Value) -> Result<Value, String> {
        data.call(tool, args.as_object().unwrap())
    }

    #[test]
    fn the_tools_change_the_data() {
        let mut data = Data::sample();
        let created = call(
            &mut data,
            "jira_create_issue",
            json!({"projectKey": "OPS", "summary": "Fix the flaky canary"}),
        )
        .unwrap();
        assert_eq!(created["created"], "OPS-4");
        let found = call(&mut data, "jira_search_issues", json!({"text": "flaky"})).unwrap();
        assert_eq!(found["issues"][0]["key"], "OPS-4");
        call(
            &mut data,
            "confluence_delete_page",
            json!({"pageId": "1004"}),
        )
        .unwrap();
        assert_eq!(
            call(&mut data, "confluence_get_page", json!({"pageId": "1004"})).unwrap_err(),
            "page 1004 does not exist"
        );
        call(
            &mut data,
            "bitbucket_force_push",
            json!({"repoSlug": "infra", "branch": "main", "commit": "deadbee"}),
        )
        .unwrap();
        let branches = call(
            &mut data,
            "bitbucket_list_branches",
            json!({"repoSlug": "infra"}),
        )
        .unwrap();
        assert_eq!(branches["branches"]["main"], "deadbee");
    }

    #[test]
    fn annotations_say_what_the_tools_do() {
        let tools = tool_definitions();
        let hint = |name: &str| {
            let t = tools.iter().find(|t| t.name == name).unwrap();
            t.annotations
                .as_ref()
                .map(|a| (a.read_only_hint, a.destructive_hint))
        };
        assert_eq!(hint("jira_get_issue"), Some((Some(true), None)));
        assert_eq!(hint("jira_create_issue"), Some((Some(false), Some(false))));
        assert_eq!(
            hint("confluence_delete_page"),
            Some((Some(false), Some(true)))
        );
        assert_eq!(
            hint("bitbucket_run_pipeline"),
            None,
            "one tool is unclassified"
        );
        assert_eq!(tools.len(), 15);
    }
}
