// Target `registriesconf`: registries.conf (TOML, through TOMLKit and toml++) into
// `RegistriesConf(toml:path:)` (Registry/RegistriesConf.swift), then the mirror and prefix
// rewriting of a few references.
import OCI
import Registry

let references: [Reference] = ["alpine", "quay.io/org/app:1", "localhost:5000/x@sha256:" + String(repeating: "a", count: 64),
                               "registry.example.com/ns/repo/sub:tag"].map { try! Reference($0) }

/// Known bugs, found by this target: toml++ 3.4.0 (in TOMLKit 0.6) asserts in
/// `parser::parse_key` (toml.hpp:15481) when a table header's key starts with anything but a
/// bare-key character or a quote (`[[[x]]]`, `[!]`, `[[` and a newline), and in
/// `parser::parse_value` (toml.hpp:14994) when an array element starts with a terminator
/// (`a = [}`): such a registries.conf aborts a debug imgvol (SIGABRT) and is undefined behaviour
/// under NDEBUG (the assertions become assumptions). The fuzz build routes toml++'s assertions
/// to Fuzz/Support/TOMLAssert, which counts those two; inputs that hit them are skipped.
@_silgen_name("imgvol_fuzz_toml_known_asserts")
func knownTOMLAsserts() -> Int

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRegistriesConf(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: bytes(data, size), as: UTF8.self)
    let known = knownTOMLAsserts()
    let conf: RegistriesConf
    do { conf = try RegistriesConf(toml: text, path: "fuzz.conf") } catch {
        _ = error.description
        return 0
    }
    guard knownTOMLAsserts() == known else { return 0 }
    for reference in references {
        _ = conf.match(reference.name)
        for tlsVerify in [true, false] {
            guard let endpoints = try? conf.endpoints(for: reference, tlsVerify: tlsVerify) else { continue }
            guard let last = endpoints.last, !last.isMirror else { violated("the origin is not the last endpoint") }
            _ = endpoints.map(\.description)
        }
    }
    return 0
}
