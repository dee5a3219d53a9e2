// The official TypeScript MCP client (@modelcontextprotocol/sdk 1.x) against an MCP URL, driven
// by the Rust interop harness. Prints one JSON object on stdout; exits 1 on failure.
//
// usage: node client.mjs URL (--token T | --client-id ID --client-secret S --issuer I --scope SC)
//
// With --token the token is sent on every request; with --client-id the SDK's own
// ClientCredentialsProvider meets the 401 and does discovery (protected resource metadata,
// authorization server metadata) and the token request itself. After the calls, a second
// client resumes the session with the first one's session id (no new initialize) and calls
// again; then the session is terminated (DELETE).
//
// --call TOOL [--args JSON]: instead, list the tools and call TOOL once; `call` in the output is
// {result} or {error: {code, message}} as the SDK reported it, and `tokenScopes` the scope of
// every token the provider obtained (a 403 insufficient_scope makes the SDK request a new token
// and retry; the provider asks for the challenged scope: MCP step-up).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";

const args = process.argv.slice(2);
const url = new URL(args[0]);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const token = opt("--token");

// The SDK 1.x transport meets a 403 insufficient_scope by running auth() again, but its
// client-credentials token request takes the scope from the provider's client metadata, not from
// the challenge. So the provider learns the challenged scope here (the response the transport is
// about to act on) and asks for the union of what it had and what the challenge names.
class StepUpProvider extends ClientCredentialsProvider {
  constructor(options) {
    super(options);
    this.scope = options.scope;
  }
  get clientMetadata() {
    return { ...super.clientMetadata, scope: this.scope };
  }
  challenged(scope) {
    const all = new Set([...(this.scope ?? "").split(" "), ...scope.split(" ")].filter(Boolean));
    this.scope = [...all].join(" ");
  }
}
let stepUp;

const requests = [];
const loggingFetch = async (input, init) => {
  const method = init?.method ?? "GET";
  requests.push(`${method} ${input instanceof URL ? input.href : input.url ?? input}`);
  const response = await fetch(input, init);
  const challenge = response.status === 403 ? response.headers.get("www-authenticate") ?? "" : "";
  const scope = /error="insufficient_scope"/.test(challenge) && challenge.match(/scope="([^"]*)"/);
  if (scope && stepUp) stepUp.challenged(scope[1]);
  return response;
};

function transportOptions(extra = {}) {
  const options = { fetch: loggingFetch, ...extra };
  if (token) {
    options.requestInit = { headers: { Authorization: `Bearer ${token}` } };
  } else {
    const provider = new StepUpProvider({
      clientId: opt("--client-id"),
      clientSecret: opt("--client-secret"),
      scope: opt("--scope"),
      expectedIssuer: opt("--issuer"),
    });
    const save = provider.saveTokens.bind(provider);
    provider.saveTokens = (tokens) => {
      tokenScopes.push(tokens.scope ?? null);
      return save(tokens);
    };
    options.authProvider = provider;
    stepUp = provider;
  }
  return options;
}

const tokenScopes = [];

async function callOnce(tool) {
  const out = {};
  const transport = new StreamableHTTPClientTransport(url, transportOptions());
  const client = new Client({ name: "gatehouse-interop", version: "1.0.0" });
  await client.connect(transport);
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  try {
    const result = await client.callTool({ name: tool, arguments: JSON.parse(opt("--args") ?? "{}") });
    out.call = { result: text(result), isError: Boolean(result.isError) };
  } catch (e) {
    out.call = { error: { code: e?.code ?? null, message: String(e?.message ?? e) } };
  }
  await client.close().catch(() => {});
  out.tokenScopes = tokenScopes;
  out.requests = requests;
  return out;
}

const text = (result) => result.content.map((c) => c.text ?? "").join("");

async function main() {
  const out = {};
  const transport = new StreamableHTTPClientTransport(url, transportOptions());
  const client = new Client({ name: "gatehouse-interop", version: "1.0.0" });
  await client.connect(transport);
  out.sessionId = transport.sessionId;
  out.protocolVersion = transport.protocolVersion;
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  out.whoami = JSON.parse(text(await client.callTool({ name: "whoami", arguments: {} })));
  const arrived = [];
  const result = await client.callTool(
    { name: "progress", arguments: { steps: 3, interval_ms: 400 } },
    undefined,
    { onprogress: (p) => arrived.push({ progress: p.progress, at: Date.now() }) },
  );
  out.progress = { sent: JSON.parse(text(result)).sent, arrived };

  // Session resumption: a new transport and client with the session id, no initialize.
  const resumedTransport = new StreamableHTTPClientTransport(
    url,
    transportOptions({ sessionId: transport.sessionId }),
  );
  const resumed = new Client({ name: "gatehouse-interop-resumed", version: "1.0.0" });
  await resumed.connect(resumedTransport);
  out.resumed = JSON.parse(text(await resumed.callTool({ name: "whoami", arguments: {} })));
  await resumedTransport.terminateSession();
  out.terminated = resumedTransport.sessionId === undefined;
  // The terminated session is gone upstream: the server's 404 reaches the client.
  try {
    await client.callTool({ name: "whoami", arguments: {} });
    out.afterTerminate = "succeeded";
  } catch (e) {
    out.afterTerminate = String(e?.message ?? e);
  }
  await client.close().catch(() => {});
  await resumed.close().catch(() => {});
  out.requests = requests;
  return out;
}

const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out" }));
  process.exit(1);
}, 60000);
(opt("--call") ? callOnce(opt("--call")) : main())
  .then((out) => {
    clearTimeout(timer);
    console.log(JSON.stringify(out));
    process.exit(0);
  })
  .catch((e) => {
    clearTimeout(timer);
    console.log(JSON.stringify({ error: String(e?.stack ?? e), requests }));
    process.exit(1);
  });
