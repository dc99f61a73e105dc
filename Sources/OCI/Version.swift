/// imgvol's version: `imgvol --version`, the CSI plugin's vendor version, the registry
/// client's User-Agent. Kept here, at the bottom of the target graph, so every target can
/// name it.
public enum ImgvolVersion {
    public static let current = "0.1.0"
}
