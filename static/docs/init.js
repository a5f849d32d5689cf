// Renders /openapi.json with Swagger UI (vendored under /static/vendor/swagger-ui-dist/).
// A file rather than an inline script, so the page's CSP allows scripts from 'self' only.
globalThis.ui = globalThis.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  // No deep links: Swagger UI puts each operation's link (an <a href>) inside the button that
  // opens it, an interactive control in another, which screen readers and keyboards cannot tell
  // apart (axe's nested-interactive). Without them the <a> has no href and is not a control.
  deepLinking: false,
  // No validator badge (Swagger UI draws none for OpenAPI 3 today): it would send the document
  // to validator.swagger.io, and no request leaves this origin.
  validatorUrl: null,
  // ?url= and ?configUrl= in the page's address would load another document: off.
  queryConfigEnabled: false,
  // Keys typed into "Authorize" stay in memory, never in localStorage.
  persistAuthorization: false,
});
