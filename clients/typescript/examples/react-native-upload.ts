// A profile picture from the phone's gallery, uploaded as the app does it. The picker's asset is declared by
// the three fields used here (expo-image-picker's ImagePickerAsset has them; react-native-image-picker's Asset
// calls them uri, fileName, type) instead of installing react-native and a picker just to type-check ~20
// lines: the client needs nothing of React Native but the `{ uri, name, type }` its FormData accepts.
import { BrokerError, createBrokerClient, uploadFile } from "@upload-broker/client";

type PickedAsset = { uri: string; fileName?: string | null; mimeType?: string };

export async function uploadAvatar(asset: PickedAsset, token: () => Promise<string>): Promise<string> {
  const broker = createBrokerClient({ baseUrl: "https://media.example.com", token });
  try {
    const { media } = await uploadFile(broker, {
      kind: "avatar",
      file: { uri: asset.uri, name: asset.fileName ?? "avatar.jpg", type: asset.mimeType ?? "image/jpeg" },
      onProgress: (sent, total) => console.log(`uploaded ${Math.round((100 * sent) / total)}%`),
    });
    return media.url; // processed (oriented, 1200 px, no GPS): <Image source={{ uri: media.url }} />
  } catch (error) {
    // The API's stable code: unsupported_type, too_large, type_mismatch, image_too_large, rate_limited, …
    if (error instanceof BrokerError) console.warn(`upload refused: ${error.code}`);
    throw error;
  }
}
