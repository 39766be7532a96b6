// The package runs in browsers, React Native and Node alike, so it is
// compiled without the DOM or Node type libraries; these are the only host
// functions it uses. They are not part of the published declarations.
declare function setTimeout(callback: () => void, ms: number): unknown;
declare function clearTimeout(handle: unknown): void;
