// Target `reference`: `Reference(text)`, the image reference parser (OCI/Reference.swift).
// Property: a parsed reference's normal form parses back to the same reference (refs.json
// stores that form and reads it back through this parser).
import OCI

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReference(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let text = String(decoding: bytes(data, size), as: UTF8.self)
    guard let reference = try? Reference(text) else { return 0 }
    let normal = reference.description
    guard let again = try? Reference(normal) else { violated("\(text.debugDescription) parsed, its normal form \(normal.debugDescription) does not") }
    guard again == reference else { violated("\(text.debugDescription) → \(normal.debugDescription) → \(again.description.debugDescription)") }
    _ = reference.manifestReference
    _ = reference.name
    return 0
}
