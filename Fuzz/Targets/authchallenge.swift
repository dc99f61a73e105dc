// Target `authchallenge`: `AuthChallenge(header:)`, the WWW-Authenticate parser
// (Registry/AuthChallenge.swift). Header text comes straight from a registry (bounded to 8 KiB
// by the caller). Property: it returns, and a parsed scheme is bearer or basic.
import Registry

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAuthChallenge(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard size <= 8192 else { return 0 }
    let header = String(decoding: bytes(data, size), as: UTF8.self)
    guard let challenge = AuthChallenge(header: header) else { return 0 }
    _ = (challenge.realm, challenge.service, challenge.scope)
    for (key, _) in challenge.parameters where key.isEmpty { violated("an empty parameter name in \(header.debugDescription)") }
    return 0
}
