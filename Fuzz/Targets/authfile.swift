// Target `authfile`: auth.json / .dockerconfigjson parsing and the key lookup
// (`AuthFile.credentials(json:registry:repository:what:)`, Registry/AuthFile.swift). The first
// byte chooses the registry and repository asked for; the rest is the JSON.
import Registry

let lookups: [(String, String)] = [
    ("docker.io", "library/alpine"), ("quay.io", "org/team/app"), ("localhost:5000", "a"),
    ("registry.example.com", "ns/repo"), ("[::1]:5000", "x/y"), ("ghcr.io", ""),
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAuthFile(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)
    guard let first = input.first else { return 0 }
    let (registry, repository) = lookups[Int(first) % lookups.count]
    let json = Array(input.dropFirst())
    let found: Credentials?
    do { found = try AuthFile.credentials(json: json, registry: registry, repository: repository, what: "fuzz input") } catch {
        guard error.kind == .invalidConfiguration else { violated("unexpected error kind: \(error)") }
        return 0
    }
    if let found, found.description != "Credentials(\(found.username):<redacted>)" { violated("a description that is not redacted") }
    return 0
}
